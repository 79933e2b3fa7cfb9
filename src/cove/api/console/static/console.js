// Cove console: follows a running response (server-sent events of rendered, escaped items).
"use strict";
(function () {
  function follow(list) {
    const base = list.dataset.live;
    const badge = document.getElementById("live");
    let source = null;
    function open() {
      const after = list.querySelectorAll(":scope > li").length;
      source = new EventSource(base + "?after=" + after);
      source.addEventListener("item", (event) => {
        list.insertAdjacentHTML("beforeend", event.data);  // rendered and escaped by the server
      });
      source.addEventListener("replace", (event) => {  // an item shown again, e.g. with durations
        const fresh = document.createElement("template");
        fresh.innerHTML = event.data;
        const item = fresh.content.firstElementChild;
        const shown = item && item.id ? document.getElementById(item.id) : null;
        if (shown) shown.replaceWith(item);
      });
      source.addEventListener("done", (event) => {
        source.close();
        const summary = document.getElementById("summary");
        if (summary) summary.outerHTML = event.data;
        if (badge) badge.remove();
      });
      source.onerror = () => {  // the stream ended early (a queued response): open again from here
        source.close();
        setTimeout(open, 1000);
      };
    }
    open();
  }
  document.addEventListener("DOMContentLoaded", () => {
    const list = document.querySelector("[data-live]");
    if (list) follow(list);
  });
})();
