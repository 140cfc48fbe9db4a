"""A headless MuJoCo household simulator that records manipulation episodes as rosbag2.

A robot arm (6 joints, parallel gripper) works at a kitchen counter: it opens drawers and doors,
presses buttons, turns knobs and levers, pushes and carries objects, pours. Every change is a
joint of the fixture moving (a lamp lights up because its switch moved); a failed manipulation
(`none`) is a real attempt that changes nothing: a slipped grasp, a locked drawer, a missed
button. Per episode the room, the counter, the fixtures' materials, the lighting and the camera
are drawn from a *scene style*; the held-out style (textures, light and camera placements never
used in training) stands in for a new robot cell.

Layout:
- `gl`: picks the headless OpenGL backend (EGL, else OSMesa) before MuJoCo is imported.
- `mjcf`, `textures`: MJCF text and procedural textures (PNG bytes handed to MuJoCo in memory).
- `styles`: scene styles (room materials, lights, camera placements) per style domain.
- `robot`: the arm's MJCF and its inverse kinematics.
- `fixtures/`: the object classes, each a small module-level class with its parts and actions.
- `tasks`: which (object class, action) combinations each split draws (held-out combinations,
  held-out classes), failure modes.
- `scene`: one episode's world: compiles the MJCF, sets fixture states, renders a camera frame.
- `episodes`: scripted manipulations: gripper trajectories, fixture state over time, events.
- `record`: episodes to rosbag2 (`cde-ros record-sim`).

Nothing here imports rclpy.
"""
