"""The page the desktop tests open in Chromium, served from inside the container by ``python3 -m
http.server``, whose log says what the browser did: a button (``/clicked``), a form field
(``/submitted``), a pad for mouse buttons and double clicks, a slider for drags, and room to scroll.
"""

PAGE = """<!doctype html>
<html><head><title>start</title><style>body { margin: 0 }</style></head>
<body onload="fetch('/loaded')">
<button id="b" style="position:absolute; left:0; top:0; width:300px; height:100px; font-size:30px"
 onclick="document.title = 'clicked'; document.body.style.background = '#0a0'; fetch('/clicked')">Click me</button>
<form action="/submitted" method="get" style="position:absolute; left:0; top:150px">
<input name="text" style="width:400px; height:40px; font-size:20px"></form>
<div id="pad" style="position:absolute; left:0; top:250px; width:300px; height:100px; background:#ccf"
 onmousedown="fetch('/down?' + event.button)" ondblclick="fetch('/double')"
 oncontextmenu="event.preventDefault()"></div>
<input type="range" min="0" max="100" value="0" style="position:absolute; left:0; top:400px; width:400px"
 onchange="fetch('/range?' + this.value)">
<div style="width:4000px; height:4000px"></div>
<script>let quiet; addEventListener("scroll", () => { clearTimeout(quiet);
  quiet = setTimeout(() => fetch(`/scrolled?${scrollX},${scrollY}`), 200); });</script>
</body></html>
"""
LOG = "/srv/http.log"
# The page's content starts below Chromium's tab strip and toolbar (87 px at 1024x768).
BUTTON = (150, 87 + 50)
FIELD = (200, 87 + 170)
PAD = (150, 87 + 300)
SLIDER_Y = 87 + 408
