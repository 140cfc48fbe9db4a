"""The robot: a 6-joint arm (yaw, shoulder, elbow, forearm roll, wrist pitch, gripper roll) with a
parallel gripper, and its inverse kinematics.

The gripper's frame is the site `grip` between the fingertips: its z axis points where the
fingers point (the approach direction) and its x axis is the direction the fingers open along.
`ArmIK.solve` moves the six arm joints so that the site reaches a position and orientation, by
damped least squares on MuJoCo's site Jacobian (`mj_jacSite`), warm-started from the current
joints, joint limits enforced. The arm is driven kinematically, like every joint of the
simulator: the recorder sets joint positions and renders, no dynamics are integrated.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .mjcf import Builder, E

ARM_JOINTS = ("arm_j1", "arm_j2", "arm_j3", "arm_j4", "arm_j5", "arm_j6")
FINGER_JOINTS = ("arm_finger_l", "arm_finger_r")
FINGER_OPEN = 0.04  # metres each finger travels from closed
# joint limits (radians): yaw, shoulder, elbow, forearm roll, wrist pitch, gripper roll
LIMITS = ((-3.0, 3.0), (-2.0, 2.0), (-2.6, 2.6), (-3.0, 3.0), (-2.2, 2.2), (-3.1, 3.1))
UPPER_ARM, FOREARM = 0.42, 0.38


def arm_body(b: Builder, base_pos, base_yaw: float, rng: np.random.Generator) -> E:
    """The arm as an MJCF body tree, materials registered in `b`."""
    shell = tuple(float(v) for v in rng.choice(np.array([[0.92, 0.92, 0.9], [0.85, 0.86, 0.88], [0.95, 0.55, 0.15],
                                                          [0.3, 0.32, 0.35], [0.2, 0.35, 0.6]])))
    b.material("arm_shell", (*shell, 1), specular=0.5, shininess=0.6)
    b.material("arm_joint", (0.18, 0.18, 0.2, 1), specular=0.3, shininess=0.4)
    b.material("arm_finger", (0.12, 0.12, 0.13, 1), specular=0.2, shininess=0.3)
    ja = dict(type="hinge", damping=0)
    fingers = [
        E("body", E("joint", name=f"arm_finger_{side}", type="slide", axis=(sgn, 0, 0), range=(0, FINGER_OPEN)),
          E("geom", type="box", size=(0.008, 0.012, 0.035), pos=(0, 0, 0.035), material="arm_finger"),
          E("geom", type="box", size=(0.005, 0.013, 0.012), pos=(-sgn * 0.005, 0, 0.062), material="arm_joint"),
          name=f"arm_finger_body_{side}", pos=(sgn * 0.01, 0, 0.045))
        for side, sgn in (("l", 1), ("r", -1))]
    gripper = E("body",
                E("joint", name="arm_j6", axis=(0, 0, 1), range=LIMITS[5], **ja),
                E("geom", type="cylinder", size=(0.035, 0.012), pos=(0, 0, 0.005), material="arm_joint"),
                E("geom", type="box", size=(0.055, 0.02, 0.02), pos=(0, 0, 0.032), material="arm_shell"),
                *fingers,
                E("site", name="grip", pos=(0, 0, 0.105), size=(0.005,)),
                name="arm_l6", pos=(0, 0, 0.07))
    wrist = E("body",
              E("joint", name="arm_j5", axis=(0, 1, 0), range=LIMITS[4], **ja),
              E("geom", type="cylinder", size=(0.036, 0.03), euler=(np.pi / 2, 0, 0), material="arm_joint"),
              E("geom", type="capsule", fromto=(0, 0, 0, 0, 0, 0.05), size=(0.033,), material="arm_shell"),
              gripper, name="arm_l5", pos=(0, 0, FOREARM))
    forearm = E("body",
                E("joint", name="arm_j4", axis=(0, 0, 1), range=LIMITS[3], **ja),
                E("geom", type="capsule", fromto=(0, 0, 0, 0, 0, FOREARM - 0.05), size=(0.038,), material="arm_shell"),
                wrist, name="arm_l4", pos=(0, 0, 0))
    elbow = E("body",
              E("joint", name="arm_j3", axis=(0, 1, 0), range=LIMITS[2], **ja),
              E("geom", type="cylinder", size=(0.045, 0.04), euler=(np.pi / 2, 0, 0), material="arm_joint"),
              forearm, name="arm_l3", pos=(0, 0, UPPER_ARM))
    shoulder = E("body",
                 E("joint", name="arm_j2", axis=(0, 1, 0), range=LIMITS[1], **ja),
                 E("geom", type="cylinder", size=(0.05, 0.045), euler=(np.pi / 2, 0, 0), material="arm_joint"),
                 E("geom", type="capsule", fromto=(0, 0, 0, 0, 0, UPPER_ARM), size=(0.045,), material="arm_shell"),
                 elbow, name="arm_l2", pos=(0, 0, 0.11))
    turret = E("body",
               E("joint", name="arm_j1", axis=(0, 0, 1), range=LIMITS[0], **ja),
               E("geom", type="cylinder", size=(0.055, 0.055), pos=(0, 0, 0.055), material="arm_shell"),
               shoulder, name="arm_l1", pos=(0, 0, 0.05))
    return E("body",
             E("geom", type="cylinder", size=(0.08, 0.025), pos=(0, 0, 0.025), material="arm_joint"),
             turret, name="arm_base", pos=tuple(base_pos), euler=(0, 0, base_yaw))


def frame(approach, opening=None) -> np.ndarray:
    """Rotation matrix (columns x, y, z) of a gripper pointing along `approach` whose fingers open
    along `opening` (made orthogonal; any perpendicular when None)."""
    z = np.asarray(approach, float)
    z = z / np.linalg.norm(z)
    if opening is None:
        opening = (0, 0, 1) if abs(z[2]) < 0.9 else (1, 0, 0)
    x = np.asarray(opening, float) - np.dot(opening, z) * z
    x = x / np.linalg.norm(x)
    return np.column_stack([x, np.cross(z, x), z])


@dataclass
class IKResult:
    position_error: float  # metres
    angle_error: float  # radians
    iterations: int


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a x b for 3-vectors (np.cross costs 20x more at this size; IK calls it in its inner loop)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


class ArmIK:
    """Damped-least-squares IK for the arm's `grip` site (see the module docstring)."""

    def __init__(self, mujoco, model) -> None:
        self.mj = mujoco
        self.model = model
        self.site = model.site("grip").id
        self.qpos = np.array([model.jnt_qposadr[model.joint(j).id] for j in ARM_JOINTS])
        self.dofs = np.array([model.jnt_dofadr[model.joint(j).id] for j in ARM_JOINTS])
        self.fingers = np.array([model.jnt_qposadr[model.joint(j).id] for j in FINGER_JOINTS])
        self.lo = np.array([lim[0] for lim in LIMITS])
        self.hi = np.array([lim[1] for lim in LIMITS])
        self._jp = np.zeros((3, model.nv))
        self._jr = np.zeros((3, model.nv))
        self.base = model.body("arm_base").id

    def set_fingers(self, data, opening: float) -> None:
        """0 = closed, 1 = fully open."""
        data.qpos[self.fingers] = float(np.clip(opening, 0, 1)) * FINGER_OPEN

    def solve(self, data, pos, rot: np.ndarray, iterations: int = 60, roll_free: bool = False,
              tol_pos: float = 5e-4, tol_rot: float = 5e-3, damping: float = 0.03) -> IKResult:
        mj, m = self.mj, self.model
        target = np.asarray(pos, float)
        w_rot = 0.35
        it = 0
        for it in range(1, iterations + 1):
            mj.mj_kinematics(m, data)
            mj.mj_comPos(m, data)
            cur = data.site_xpos[self.site]
            r = data.site_xmat[self.site].reshape(3, 3)
            e_p = target - cur
            if roll_free:
                e_r = _cross(r[:, 2], rot[:, 2])
            else:  # 0.5 * sum_i r_i x rot_i
                e_r = 0.5 * (_cross(r[:, 0], rot[:, 0]) + _cross(r[:, 1], rot[:, 1]) + _cross(r[:, 2], rot[:, 2]))
            if np.linalg.norm(e_p) < tol_pos and np.linalg.norm(e_r) < tol_rot:
                break
            mj.mj_jacSite(m, data, self._jp, self._jr, self.site)
            jac = np.vstack([self._jp[:, self.dofs], w_rot * self._jr[:, self.dofs]])
            err = np.concatenate([e_p, w_rot * e_r])
            jjt = jac @ jac.T + damping ** 2 * np.eye(6)
            dq = jac.T @ np.linalg.solve(jjt, err)
            step = min(1.0, 0.35 / (np.abs(dq).max() + 1e-9))  # at most 0.35 rad per iteration
            q = data.qpos[self.qpos] + step * dq
            data.qpos[self.qpos] = np.clip(q, self.lo, self.hi)
        mj.mj_kinematics(m, data)
        r = data.site_xmat[self.site].reshape(3, 3)
        ang = float(np.arccos(np.clip(np.dot(r[:, 2], rot[:, 2]), -1, 1)))
        return IKResult(float(np.linalg.norm(target - data.site_xpos[self.site])), ang, it)

    def solve_anywhere(self, data, pos, rot: np.ndarray, roll_free: bool = False) -> IKResult:
        """`solve` from several starting configurations (elbow up, down, stretched; the base
        turned towards the target and beside it); keeps the best. For poses far from the
        current one (a start pose), where warm-starting can end at a joint limit."""
        mj, m = self.mj, self.model
        mj.mj_kinematics(m, data)
        local = data.xmat[self.base].reshape(3, 3).T @ (np.asarray(pos, float) - data.xpos[self.base])
        phi = float(np.arctan2(local[1], local[0]))
        best, best_q = None, None
        for dj1 in (0.0, 0.5, -0.5):
            for j2, j3, j5 in ((0.3, 1.3, 1.2), (0.8, 0.9, 1.0), (-0.2, 1.8, 1.4), (0.5, 0.5, 0.5)):
                data.qpos[self.qpos] = np.clip([phi + dj1, j2, j3, 0.0, j5, 0.0], self.lo, self.hi)
                res = self.solve(data, pos, rot, iterations=80, roll_free=roll_free)
                score = res.position_error + 0.05 * res.angle_error
                if best is None or score < best[0]:
                    best, best_q = (score, res), data.qpos[self.qpos].copy()
                if res.position_error < 1e-3 and res.angle_error < 0.02:
                    return res
        data.qpos[self.qpos] = best_q
        mj.mj_kinematics(m, data)
        return best[1]
