"""The action vocabulary. `none` means the manipulation changed nothing (a failed action)."""

ACTIONS: tuple[str, ...] = (
    "open", "close", "turn_on", "turn_off", "push_left", "push_right", "fill", "empty", "none",
)
OPPOSITE: dict[str, str] = {
    "open": "close", "close": "open", "turn_on": "turn_off", "turn_off": "turn_on",
    "push_left": "push_right", "push_right": "push_left", "fill": "empty", "empty": "fill",
}
