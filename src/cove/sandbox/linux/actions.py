"""OpenAI's computer actions, checked and compiled to the display agent's steps (xdotool commands).

Checking happens here, on the host, before anything reaches the container: an action that does not
fit (an unknown type or key, a coordinate off the screen, a missing field) is an ``InvalidRequest``
naming ``actions[i]``, and the agent only ever runs what this module wrote. xdotool's own delays
(12 ms a key, 100 ms a click) are turned off: the settled screenshot is what waits for the screen.
"""

from __future__ import annotations

from typing import Any

from cove.errors import InvalidRequest
from cove.sandbox.base import Screen

MAX_ACTIONS = 100
MAX_TEXT = 10_000
"""Characters one ``type`` action may type (xdotool types ~500 a second)."""
MAX_DRAG_POINTS = 1_000
MAX_SCROLL_CLICKS = 50
SCROLL_CLICK_PX = 120
"""Pixels a wheel click scrolls in Chromium (measured): OpenAI's scroll_x/scroll_y are pixels, X has
wheel clicks, so a scroll moves by the nearest whole number of clicks (at least one)."""
WAIT_S = 1.0
"""OpenAI's ``wait`` names no duration; its reference implementations wait about a second."""
DOUBLE_CLICK_GAP_MS = "40"

BUTTONS = {"left": "1", "middle": "2", "wheel": "2", "right": "3", "back": "8", "forward": "9"}

_KEYS = {
    "ctrl": "ctrl", "control": "ctrl", "alt": "alt", "option": "alt", "shift": "shift",
    "cmd": "super", "command": "super", "meta": "super", "super": "super", "win": "super", "windows": "super",
    "enter": "Return", "return": "Return", "esc": "Escape", "escape": "Escape", "tab": "Tab",
    "space": "space", "backspace": "BackSpace", "delete": "Delete", "del": "Delete", "insert": "Insert",
    "home": "Home", "end": "End", "pageup": "Prior", "pagedown": "Next",
    "arrowup": "Up", "arrowdown": "Down", "arrowleft": "Left", "arrowright": "Right",
    "up": "Up", "down": "Down", "left": "Left", "right": "Right", "capslock": "Caps_Lock",
    "printscreen": "Print", "numlock": "Num_Lock", "scrolllock": "Scroll_Lock", "pause": "Pause",
    "contextmenu": "Menu", "menu": "Menu",
    "/": "slash", "\\": "backslash", "-": "minus", "=": "equal", "+": "plus", "[": "bracketleft",
    "]": "bracketright", ";": "semicolon", "'": "apostrophe", ",": "comma", ".": "period", "`": "grave",
    "*": "asterisk", "!": "exclam", "@": "at", "#": "numbersign", "$": "dollar", "%": "percent",
    "^": "asciicircum", "&": "ampersand", "(": "parenleft", ")": "parenright", "_": "underscore",
    "{": "braceleft", "}": "braceright", "|": "bar", ":": "colon", '"': "quotedbl", "<": "less",
    ">": "greater", "?": "question", "~": "asciitilde", " ": "space",
    **{f"f{n}": f"F{n}" for n in range(1, 25)},
}
"""OpenAI's key names (its sample apps' table: CTRL, ENTER, ARROWLEFT, PAGEDOWN, CMD, ...), any case,
to X keysyms; single letters and digits stand for themselves."""


def keysym(name: str) -> str | None:
    if len(name) == 1 and name.isascii() and name.isalnum():
        return name.lower()
    return _KEYS.get(name.lower())


Step = dict[str, Any]


def compile_actions(actions: Any, screen: Screen) -> tuple[list[Step], bool]:
    """The agent's steps for ``actions``, and whether the screenshot after them should settle (not
    for a batch of only ``screenshot`` actions, which is a look, not a change)."""
    if not isinstance(actions, list) or not actions:
        raise InvalidRequest("actions must be a non-empty list of computer actions.", param="actions")
    if len(actions) > MAX_ACTIONS:
        raise InvalidRequest(f"At most {MAX_ACTIONS} actions per request.", param="actions")
    steps: list[Step] = []
    for index, action in enumerate(actions):
        steps.extend(_Action(action, index, screen).steps())
    return steps, any(a.get("type") != "screenshot" for a in actions)


class _Action:
    def __init__(self, action: Any, index: int, screen: Screen) -> None:
        self.param = f"actions[{index}]"
        if not isinstance(action, dict):
            raise self.invalid("must be an object")
        self.action = action
        self.screen = screen

    def invalid(self, why: str) -> InvalidRequest:
        return InvalidRequest(f"Invalid {self.param}: {why}.", param=self.param)

    def field(self, name: str) -> Any:
        if name not in self.action:
            raise self.invalid(f"{name} is required for {self.action.get('type')!r}")
        return self.action[name]

    def number(self, value: Any, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise self.invalid(f"{name} must be a number")
        if abs(value) > 1 << 20:
            raise self.invalid(f"{name} is out of range")
        return round(value)

    def point(self, source: Any, where: str = "") -> list[str]:
        if not isinstance(source, dict):
            raise self.invalid(f"{where or 'the point'} must be an object with x and y")
        x = self.number(source.get("x"), f"{where}x")
        y = self.number(source.get("y"), f"{where}y")
        if not (0 <= x < self.screen.width and 0 <= y < self.screen.height):
            raise self.invalid(f"({x}, {y}) is off the {self.screen.width}x{self.screen.height} screen")
        return [str(x), str(y)]

    def steps(self) -> list[Step]:
        kind = self.action.get("type")
        handler = getattr(self, f"_{kind}", None) if isinstance(kind, str) and kind.isidentifier() else None
        if handler is None:
            raise self.invalid(f"unknown action type {kind!r}; expected click, double_click, drag, keypress, "
                               "move, scroll, type, wait or screenshot")
        result: list[Step] = handler()
        return result

    def _click(self) -> list[Step]:
        button = self.action.get("button", "left")
        if button not in BUTTONS:
            raise self.invalid(f"button must be one of {', '.join(BUTTONS)}")
        return [{"xdotool": ["mousemove", *self.point(self.action), "click", "--delay", "0", BUTTONS[button]]}]

    def _double_click(self) -> list[Step]:
        return [{"xdotool": ["mousemove", *self.point(self.action), "click", "--repeat", "2",
                             "--delay", DOUBLE_CLICK_GAP_MS, "1"]}]

    def _move(self) -> list[Step]:
        return [{"xdotool": ["mousemove", *self.point(self.action)]}]

    def _drag(self) -> list[Step]:
        path = self.field("path")
        if not isinstance(path, list) or not 2 <= len(path) <= MAX_DRAG_POINTS:
            raise self.invalid(f"path must be a list of 2 to {MAX_DRAG_POINTS} points")
        points = [self.point(p, f"path[{i}].") for i, p in enumerate(path)]
        args = ["mousemove", *points[0], "mousedown", "1"]
        for point in points[1:]:
            args += ["mousemove", *point]
        return [{"xdotool": [*args, "mouseup", "1"]}]

    def _scroll(self) -> list[Step]:
        args = ["mousemove", *self.point(self.action)]
        for name, less, more in (("scroll_y", "4", "5"), ("scroll_x", "6", "7")):
            pixels = self.number(self.action.get(name, 0), name)
            if pixels:
                clicks = min(MAX_SCROLL_CLICKS, max(1, round(abs(pixels) / SCROLL_CLICK_PX)))
                args += ["click", "--repeat", str(clicks), "--delay", "5", more if pixels > 0 else less]
        return [{"xdotool": args}]

    def _keypress(self) -> list[Step]:
        keys = self.field("keys")
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys) or len(keys) > 10:
            raise self.invalid("keys must be a list of 1 to 10 key names")
        mapped = []
        for key in keys:
            sym = keysym(key)
            if sym is None:
                raise self.invalid(f"unknown key {key!r}")
            mapped.append(sym)
        return [{"xdotool": ["key", "--clearmodifiers", "--delay", "0", "+".join(mapped)]}]

    def _type(self) -> list[Step]:
        text = self.field("text")
        if not isinstance(text, str) or len(text) > MAX_TEXT:
            raise self.invalid(f"text must be a string of at most {MAX_TEXT} characters")
        if "\x00" in text:
            raise self.invalid("text cannot contain NUL")
        return [{"xdotool": ["type", "--clearmodifiers", "--delay", "1", "--", text]}] if text else []

    def _wait(self) -> list[Step]:
        return [{"sleep": WAIT_S}]

    def _screenshot(self) -> list[Step]:
        return []
