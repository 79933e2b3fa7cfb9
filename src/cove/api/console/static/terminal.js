// Cove console: the container's terminal, xterm.js over the PTY WebSocket (docs/terminals.md).
// Binary frames carry the terminal's bytes both ways; text frames are JSON control messages.
"use strict";
(function () {
  const status = (text) => { document.getElementById("terminal-status").textContent = text; };

  async function start(element) {
    const term = new Terminal({cursorBlink: true, fontSize: 14, convertEol: false});
    const fit = new FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(element);
    fit.fit();
    // The token comes from the console session (the CSRF token proves it is this page asking).
    const answer = await fetch("/console/containers/" + encodeURIComponent(element.dataset.container) + "/terminal",
                               {method: "POST", headers: {"X-CSRF-Token": element.dataset.csrf},
                                credentials: "same-origin"});
    if (!answer.ok) {
      const refused = await answer.json().catch(() => ({}));
      status("no terminal: " + ((refused.error && refused.error.message) || answer.status));
      return;
    }
    const minted = await answer.json();
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(scheme + "//" + location.host + minted.url + "&cols=" + term.cols + "&rows=" + term.rows);
    socket.binaryType = "arraybuffer";
    const encoder = new TextEncoder();
    socket.onopen = () => { status("connected"); term.focus(); };
    socket.onmessage = (event) => {
      if (typeof event.data === "string") {
        const control = JSON.parse(event.data);
        if (control.type === "exit") status("exited with " + control.exit_code);
      } else {
        term.write(new Uint8Array(event.data));
      }
    };
    socket.onclose = () => { if (!/exited/.test(document.getElementById("terminal-status").textContent)) status("closed"); };
    term.onData((data) => { if (socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data)); });
    term.onResize(({cols, rows}) => {
      if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({type: "resize", cols, rows}));
    });
    window.addEventListener("resize", () => fit.fit());
  }

  document.addEventListener("DOMContentLoaded", () => {
    const element = document.getElementById("terminal");
    if (element) start(element).catch((error) => status("terminal failed: " + error));
  });
})();
