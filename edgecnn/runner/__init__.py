"""The on-device runner: `python -m edgecnn.runner BUNDLE` on a board with numpy and one runtime.

Nothing is imported here: the emulated guest imports edgecnn.runner.sessions alone.
"""
