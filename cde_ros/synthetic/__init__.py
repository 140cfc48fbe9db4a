"""The 2D procedural intervention scenes (fast, for unit tests and the 2D benchmark) and their\nrecorder."""
