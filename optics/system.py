"""The instrument: a reconstruction box, cameras, mirrors and windows; its TOML system file.

Schema ``recon.system/1`` (lengths in mm, angles nowhere — directions are vectors)::

    schema = "recon.system/1"
    name = "magis_dome"
    description = "..."                     # optional
    [volume]
    min_mm = [-1.2, -1.2, -1.2]
    max_mm = [1.2, 1.2, 1.2]
    [[cameras]]
    name = "main"
    [cameras.sensor]                        # all keys required
    width_px = 9600, height_px = 6422, pixel_pitch_um = 3.76, quantum_efficiency = 0.77,
    gain_e_per_adu = 1.0, read_noise_e = 2.0, offset_adu = 100.0, bit_depth = 16
    [cameras.lens]
    model = "thin"                          # thin | pinhole | telecentric
    focal_length_mm = 62.275                # thin, pinhole
    f_number = 1.23
    magnification = 0.215                   # or focus_distance_mm (exactly one)
    distortion = [k1, k2, p1, p2, k3, k4, k5, k6]   # optional, OpenCV order
    [cameras.pose]
    position_mm = [0, 0, -352]
    look_at_mm = [0, 0, 0]                  # with up (the image's up, opposite to v); or one of
    up = [0, -1, 0]                         #   rotation = 3×3 camera-to-world (columns: the camera's
                                            #   x right, y down, z along the view, as OpenCV),
                                            #   euler_xyz_deg = [α, β, γ] (R = Rz(γ) Ry(β) Rx(α): about
                                            #   the world's x, then y, then z), quaternion_wxyz
    [cameras.sensor] principal_point_px = [cx, cy]   # optional; default the sensor centre
    [cameras.sensor] sensitivity = 0.62     # optional, default 1: the recorded light relative to
                                            #   what the file predicts, from a calibration
    [[mirrors]]
    name = "m01", center_mm = [...], normal = [...], reflectivity = 0.95
    shape = "circle", radius_mm = 2.5       # or shape = "rectangle", size_mm = [w, h], u_axis
    [[windows]]                             # acts on the rays that cross its aperture
    name = "viewport", center_mm, normal, thickness_mm, refractive_index, aperture_radius_mm
    mount_radius_mm = 60                    # optional: an opaque flange out to this radius

Unknown keys are errors. Every error names the file and the key.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from optics.atomic import atomic_write_text
from optics.camera import Camera, Pose, Sensor, look_at_rotation
from optics.errors import ConfigError
from optics.lens import LENS_MODELS, Lens
from optics.limits import LENGTH_MM, check_number
from optics.mirror import MIRROR_SHAPES, Mirror
from optics.tomlio import read_toml
from optics.window import Window

__all__ = ["Box", "POSE_KEYS", "SCHEMA", "System", "euler_xyz_rotation", "load_system", "quaternion_rotation",
           "save_system", "system_from_dict", "system_to_dict"]

SCHEMA = "recon.system/1"


@dataclass(frozen=True)
class Box:
    """The axis-aligned reconstruction volume, world frame, mm."""

    min_mm: torch.Tensor
    max_mm: torch.Tensor

    @property
    def center_mm(self) -> torch.Tensor:
        """(3,) centre of the box, mm."""
        return 0.5 * (self.min_mm + self.max_mm)

    @property
    def size_mm(self) -> torch.Tensor:
        """(3,) edge lengths, mm."""
        return self.max_mm - self.min_mm

    def corners(self) -> torch.Tensor:
        """(8, 3) corner points, mm."""
        lo, hi = self.min_mm, self.max_mm
        idx = torch.tensor([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=torch.bool)
        return torch.where(idx, hi, lo)


@dataclass(frozen=True)
class System:
    """A whole instrument. Paths: 0 is the direct view, k ≥ 1 the view through mirror k − 1."""

    name: str
    volume: Box
    cameras: tuple[Camera, ...]
    mirrors: tuple[Mirror, ...]
    windows: tuple[Window, ...]
    description: str = ""

    @property
    def n_paths(self) -> int:
        """Number of light paths per camera: direct + one per mirror."""
        return 1 + len(self.mirrors)

    def path_name(self, path: int) -> str:
        """Human name of a path index."""
        return "direct" if path == 0 else self.mirrors[path - 1].name

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the geometry."""
        return self.volume.min_mm.dtype

    def to(self, dtype: torch.dtype | None = None, device=None) -> System:
        """Return a copy with every tensor moved to ``dtype``/``device``."""
        return replace(
            self,
            volume=Box(self.volume.min_mm.to(dtype=dtype, device=device),
                       self.volume.max_mm.to(dtype=dtype, device=device)),
            cameras=tuple(c.to(dtype, device) for c in self.cameras),
            mirrors=tuple(m.to(dtype, device) for m in self.mirrors),
            windows=tuple(w.to(dtype, device) for w in self.windows),
        )


# --------------------------------------------------------------------------- validation


class _Reader:
    """Typed access to one TOML table with errors naming the file and the key."""

    def __init__(self, table: dict, where: str, source: str):
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: '{where}' must be a table, got {type(table).__name__}")
        self.table, self.where, self.source = table, where, source
        self.used: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.source}: key {self._key(key)!r} {msg}")  # repr: one line, any key

    def has(self, key: str) -> bool:
        return key in self.table

    def get(self, key: str, kind: str, *, default=None, required: bool = True):
        self.used.add(key)
        if key not in self.table:
            if required and default is None:
                raise self.error(key, f"is missing; add it ({kind})")
            return default
        value = self.table[key]
        if kind == "str":
            ok = isinstance(value, str)
        elif kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
            if ok and key in _LIMITS:
                self._sane(key, value)
        elif kind == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok:
                value = self._sane(key, value)
        elif kind.startswith("vec"):
            n = int(kind[3:])
            ok = (isinstance(value, list) and len(value) == n
                  and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))
            if ok:
                value = [self._sane(key, v) for v in value]
        elif kind == "mat3":
            ok = (isinstance(value, list) and len(value) == 3
                  and all(isinstance(r, list) and len(r) == 3 for r in value)
                  and all(isinstance(v, (int, float)) and not isinstance(v, bool) for r in value for v in r))
            if ok:
                value = [[self._sane(key, v) for v in r] for r in value]
        elif kind == "table":
            ok = isinstance(value, dict)
        elif kind == "tables":
            ok = isinstance(value, list) and all(isinstance(v, dict) for v in value)
        else:  # pragma: no cover - programming error
            raise AssertionError(kind)
        if not ok:
            shown = repr(value) if len(repr(value)) < 60 else repr(value)[:57] + "..."
            raise self.error(key, f"must be {_KIND_TEXT.get(kind, kind)}, got {shown}")
        return value

    def _sane(self, key: str, value: float) -> float:
        """``value`` if finite, float32-representable and in the physical range of ``key``."""
        low, high, unit = _LIMITS.get(key, (None, None, ""))
        if low is not None and low > 0 and value <= 0:
            raise self.error(key, f"must be > 0, got {value}")
        return check_number(value, self._key(key), self.source, low=low, high=high, unit=unit)

    def positive(self, key: str, kind: str = "float", **kw):
        value = self.get(key, kind, **kw)
        if value is not None and value <= 0:
            raise self.error(key, f"must be > 0, got {value}")
        return value

    def nonzero_vec(self, key: str, **kw):
        value = self.get(key, "vec3", **kw)
        if value is not None and math.hypot(*value) < 1e-12:
            raise self.error(key, "must be a non-zero vector")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            allowed = ", ".join(sorted(self.used))
            raise self.error(unknown[0], f"is not known; allowed keys here: {allowed}")


#: Key → (lowest, highest, unit) of a physically sane value (every component of a vector).
_LIMITS = {
    "center_mm": (-LENGTH_MM, LENGTH_MM, " mm"),
    "position_mm": (-LENGTH_MM, LENGTH_MM, " mm"),
    "look_at_mm": (-LENGTH_MM, LENGTH_MM, " mm"),
    "min_mm": (-1e4, 1e4, " mm"),
    "max_mm": (-1e4, 1e4, " mm"),
    "radius_mm": (None, 1e4, " mm"),
    "aperture_radius_mm": (None, 1e4, " mm"),
    "mount_radius_mm": (None, 1e5, " mm"),
    "size_mm": (None, 1e4, " mm"),
    "thickness_mm": (None, 1e3, " mm"),
    "focal_length_mm": (0.01, 1e5, " mm"),
    "focus_distance_mm": (None, LENGTH_MM, " mm"),
    "working_distance_mm": (None, LENGTH_MM, " mm"),
    "f_number": (0.1, 1e9, ""),  # a thin lens stopped down to a pinhole is a limit tests take
    "magnification": (1e-6, 1e6, ""),
    "pixel_pitch_um": (0.1, 1e3, " µm"),
    "gain_e_per_adu": (1e-6, 1e6, " e⁻/ADU"),
    "read_noise_e": (None, 1e6, " e⁻"),
    "offset_adu": (-(2.0**32), 2.0**32, " ADU"),
    "refractive_index": (None, 10.0, ""),
    "distortion": (-1e6, 1e6, ""),
    "width_px": (None, 1e6, " px"),
    "height_px": (None, 1e6, " px"),
}

_KIND_TEXT = {
    "str": "a string", "int": "an integer", "float": "a number", "vec3": "a list of 3 numbers",
    "vec2": "a list of 2 numbers", "vec4": "a list of 4 numbers", "vec8": "a list of 8 numbers",
    "mat3": "a 3×3 list of lists",
    "table": "a table", "tables": "an array of tables",
}


def _t(value, dtype) -> torch.Tensor:
    return torch.as_tensor(value, dtype=dtype)


def _parse_sensor(r: _Reader) -> Sensor:
    sensor = Sensor(
        width_px=r.positive("width_px", "int"),
        height_px=r.positive("height_px", "int"),
        pixel_pitch_um=r.positive("pixel_pitch_um"),
        quantum_efficiency=r.positive("quantum_efficiency"),
        gain_e_per_adu=r.positive("gain_e_per_adu"),
        read_noise_e=r.get("read_noise_e", "float"),
        offset_adu=r.get("offset_adu", "float"),
        bit_depth=r.positive("bit_depth", "int"),
    )
    centre = r.get("principal_point_px", "vec2", required=False, default=None)
    if centre is not None:
        if not (0 <= centre[0] <= sensor.width_px - 1 and 0 <= centre[1] <= sensor.height_px - 1):
            raise r.error("principal_point_px", f"must lie on the sensor (0 … {sensor.width_px - 1}, "
                          f"0 … {sensor.height_px - 1} px), got {centre}")
        sensor = replace(sensor, principal_point=(float(centre[0]), float(centre[1])))
    sensor = replace(sensor, sensitivity=r.positive("sensitivity", required=False, default=1.0))
    if sensor.quantum_efficiency > 1:
        raise r.error("quantum_efficiency", f"must be in (0, 1], got {sensor.quantum_efficiency}")
    if sensor.read_noise_e < 0:
        raise r.error("read_noise_e", f"must be ≥ 0, got {sensor.read_noise_e}")
    if not 1 <= sensor.bit_depth <= 32:
        raise r.error("bit_depth", f"must be between 1 and 32, got {sensor.bit_depth}")
    r.finish()
    return sensor


def _parse_lens(r: _Reader, dtype) -> Lens:
    model = r.get("model", "str")
    if model not in LENS_MODELS:
        raise r.error("model", f"must be one of {', '.join(LENS_MODELS)}, got '{model}'")
    f_number = r.positive("f_number")
    has_m, has_so = r.has("magnification"), r.has("focus_distance_mm")
    if has_m == has_so:
        raise r.error("magnification", "or 'focus_distance_mm' must be given (exactly one of them)")
    if model == "telecentric":
        if has_so:
            raise r.error("focus_distance_mm", "is not used by a telecentric lens; give "
                          "'magnification' and 'working_distance_mm'")
        m = r.positive("magnification")
        so = r.positive("working_distance_mm")
        f = r.positive("focal_length_mm", required=False, default=so)  # informational only
        distortion = r.get("distortion", "vec8", required=False)
        if distortion is not None:
            raise r.error("distortion", "is not supported for a telecentric lens; remove it")
    else:
        f = r.positive("focal_length_mm")
        if has_m:
            m = r.positive("magnification")
            so = f * (1.0 + m) / m
        else:
            so = r.positive("focus_distance_mm")
            if so <= f:
                raise r.error("focus_distance_mm", f"must exceed the focal length {f} mm, got {so}")
            m = f / (so - f)
        distortion = r.get("distortion", "vec8", required=False)
    r.finish()
    return Lens(
        model=model,
        focal_length_mm=_t(f, dtype),
        f_number=_t(f_number, dtype),
        focus_distance_mm=_t(so, dtype),
        telecentric_magnification=_t(m, dtype),
        distortion=None if distortion is None else _t(distortion, dtype),
    )


POSE_KEYS = ("look_at_mm", "rotation", "euler_xyz_deg", "quaternion_wxyz")


def euler_xyz_rotation(angles_deg) -> torch.Tensor:
    """(3, 3) float64 ``Rz(γ) Ry(β) Rx(α)`` of ``[α, β, γ]`` degrees.

    Rotations about the fixed world x, then y, then z axes (extrinsic x-y-z; the same as
    intrinsic z-y′-x″).
    """
    a, b, c = (math.radians(float(v)) for v in angles_deg)

    def about(axis: int, angle: float) -> torch.Tensor:
        i, j = [k for k in range(3) if k != axis]
        m = torch.eye(3, dtype=torch.float64)
        m[i, i] = m[j, j] = math.cos(angle)
        m[i, j], m[j, i] = -math.sin(angle), math.sin(angle)
        return m if axis != 1 else m.T  # about y: the sine's sign flips (z × x = y)

    return about(2, c) @ about(1, b) @ about(0, a)


def quaternion_rotation(wxyz) -> torch.Tensor:
    """(3, 3) float64 rotation of the quaternion ``[w, x, y, z]`` (normalised; Hamilton convention)."""
    q = torch.tensor([float(v) for v in wxyz], dtype=torch.float64)
    w, x, y, z = q / q.norm()
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)]),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)]),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]),
    ])


def _parse_pose(r: _Reader, dtype) -> Pose:
    position = r.get("position_mm", "vec3")
    given = [k for k in POSE_KEYS if r.has(k)] or ["look_at_mm"]  # none: look_at_mm is missing
    if len(given) > 1:
        raise r.error(given[1], f"cannot be combined with '{given[0]}'; give one orientation of "
                      f"{', '.join(POSE_KEYS)} (with up for look_at_mm)")
    if r.has("up") and given[0] != "look_at_mm":
        raise r.error("up", f"goes with 'look_at_mm', not with '{given[0]}'")
    if given[0] == "rotation":
        rot = _t(r.get("rotation", "mat3"), torch.float64)
        err = (rot.T @ rot - torch.eye(3, dtype=torch.float64)).abs().max().item()
        if err > 1e-6 or torch.linalg.det(rot).item() < 0:
            raise r.error("rotation", "must be a proper rotation matrix (orthonormal, det = +1)")
        r.finish()
        return Pose(_t(position, dtype), rot.to(dtype))
    if given[0] == "euler_xyz_deg":
        rot = euler_xyz_rotation(r.get("euler_xyz_deg", "vec3"))
        r.finish()
        return Pose(_t(position, dtype), rot.to(dtype))
    if given[0] == "quaternion_wxyz":
        q = r.get("quaternion_wxyz", "vec4")
        if math.hypot(*q) < 1e-12:
            raise r.error("quaternion_wxyz", "must be a non-zero quaternion")
        r.finish()
        return Pose(_t(position, dtype), quaternion_rotation(q).to(dtype))
    look_at = r.get("look_at_mm", "vec3")
    up = r.nonzero_vec("up")
    r.finish()
    pos, tgt, upv = _t(position, dtype), _t(look_at, dtype), _t(up, dtype)
    if torch.linalg.norm(tgt - pos) < 1e-9:
        raise r.error("look_at_mm", "must differ from 'position_mm'")
    axis = (tgt - pos) / torch.linalg.norm(tgt - pos)
    if torch.linalg.norm(torch.cross(axis, upv / torch.linalg.norm(upv), dim=0)) < 1e-6:
        raise r.error("up", "must not be parallel to the viewing direction")
    return Pose(pos, look_at_rotation(pos, tgt, upv))


def _parse_mirror(r: _Reader, dtype, index: int) -> Mirror:
    name = r.get("name", "str", required=False, default=f"m{index + 1:02d}")
    center = r.get("center_mm", "vec3")
    normal = r.nonzero_vec("normal")
    shape = r.get("shape", "str")
    if shape not in MIRROR_SHAPES:
        raise r.error("shape", f"must be one of {', '.join(MIRROR_SHAPES)}, got '{shape}'")
    reflectivity = r.positive("reflectivity")
    if reflectivity > 1:
        raise r.error("reflectivity", f"must be in (0, 1], got {reflectivity}")
    if shape == "circle":
        radius = r.positive("radius_mm")
        half, u_axis = [0.0, 0.0], _any_perpendicular(normal)
    else:
        size = r.get("size_mm", "vec2")
        if min(size) <= 0:
            raise r.error("size_mm", f"must be positive, got {size}")
        half, radius = [0.5 * size[0], 0.5 * size[1]], 0.0
        u_axis = r.nonzero_vec("u_axis")
    r.finish()
    return Mirror(
        name=name, center_mm=_t(center, dtype), normal=_t(normal, dtype), shape=shape,
        radius_mm=_t(radius, dtype), half_size_mm=_t(half, dtype), u_axis=_t(u_axis, dtype),
        reflectivity=_t(reflectivity, dtype),
    )


def _any_perpendicular(n: list[float]) -> list[float]:
    ref = [1.0, 0.0, 0.0] if abs(n[0]) < 0.9 * math.hypot(*n) else [0.0, 1.0, 0.0]
    c = [n[1] * ref[2] - n[2] * ref[1], n[2] * ref[0] - n[0] * ref[2], n[0] * ref[1] - n[1] * ref[0]]
    return c


def _parse_window(r: _Reader, dtype, index: int) -> Window:
    w = Window(
        name=r.get("name", "str", required=False, default=f"w{index + 1:02d}"),
        center_mm=_t(r.get("center_mm", "vec3"), dtype),
        normal=_t(r.nonzero_vec("normal"), dtype),
        thickness_mm=_t(r.positive("thickness_mm"), dtype),
        refractive_index=_t(r.positive("refractive_index"), dtype),
        aperture_radius_mm=_t(r.positive("aperture_radius_mm"), dtype),
    )
    mount = r.positive("mount_radius_mm", required=False, default=None)
    if mount is not None:
        if not mount >= float(w.aperture_radius_mm):
            raise r.error("mount_radius_mm", f"must be ≥ aperture_radius_mm ({float(w.aperture_radius_mm)}), "
                          f"got {mount}")
        w = replace(w, mount_radius_mm=_t(mount, dtype))
    if float(w.refractive_index) < 1.0:
        raise r.error("refractive_index", f"must be ≥ 1, got {float(w.refractive_index)}")
    r.finish()
    return w


def system_from_dict(data: dict, *, source: str = "<system>", dtype=torch.float32) -> System:
    """Build a :class:`System` from the parsed TOML of a system file (strictly validated).

    Raises:
        ConfigError: a key is missing, unknown, of the wrong type or non-physical.
    """
    top = _Reader(data, "", source)
    schema = top.get("schema", "str")
    if schema != SCHEMA:
        raise top.error("schema", f"must be '{SCHEMA}', got '{schema}'")
    name = top.get("name", "str")
    description = top.get("description", "str", required=False, default="")
    vol = _Reader(top.get("volume", "table"), "volume", source)
    vmin, vmax = vol.get("min_mm", "vec3"), vol.get("max_mm", "vec3")
    if any(hi <= lo for lo, hi in zip(vmin, vmax, strict=True)):
        raise vol.error("max_mm", f"must exceed 'min_mm' on every axis (box {vmin} → {vmax} is "
                        "inverted or empty); swap or fix the corners")
    vol.finish()
    cams = top.get("cameras", "tables")
    if not cams:
        raise top.error("cameras", "must list at least one camera")
    cameras = []
    for i, c in enumerate(cams):
        cr = _Reader(c, f"cameras[{i}]", source)
        cam_name = cr.get("name", "str", required=False, default=f"camera{i}")
        sensor = _parse_sensor(_Reader(cr.get("sensor", "table"), f"cameras[{i}].sensor", source))
        lens = _parse_lens(_Reader(cr.get("lens", "table"), f"cameras[{i}].lens", source), dtype)
        pose = _parse_pose(_Reader(cr.get("pose", "table"), f"cameras[{i}].pose", source), dtype)
        cr.finish()
        cameras.append(Camera(cam_name, sensor, lens, pose))
    mirrors = tuple(
        _parse_mirror(_Reader(m, f"mirrors[{i}]", source), dtype, i)
        for i, m in enumerate(top.get("mirrors", "tables", required=False, default=[]))
    )
    windows = tuple(
        _parse_window(_Reader(w, f"windows[{i}]", source), dtype, i)
        for i, w in enumerate(top.get("windows", "tables", required=False, default=[]))
    )
    top.finish()
    names = [m.name for m in mirrors]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: mirror names must be unique, got {names}")
    return System(
        name=name,
        volume=Box(_t(vmin, dtype), _t(vmax, dtype)),
        cameras=tuple(cameras),
        mirrors=mirrors,
        windows=windows,
        description=description,
    )


def load_system(path: str | os.PathLike, *, dtype=torch.float32) -> System:
    """Read and validate a system file.

    Raises:
        ConfigError: the file is missing, not valid TOML, or fails validation (the message names
            the file and the key).
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"system file {path} is a directory; pass the path of a system TOML "
                          "(e.g. data/systems/magis_dome.toml)")
    if path.exists() and not path.is_file():
        raise ConfigError(f"system file {path} is not a regular file (a FIFO, a device or a socket); pass "
                          "the path of a system TOML")
    if not path.is_file():
        raise ConfigError(f"system file {path} does not exist; pass the path of a system TOML "
                          "(e.g. data/systems/magis_dome.toml)")
    data = read_toml(path, "system file")
    return system_from_dict(data, source=str(path), dtype=dtype)


def _vec(t: torch.Tensor) -> list:
    return [round(float(v), 12) for v in t.detach().cpu().reshape(-1)]


def _sensor_dict(sensor: Sensor) -> dict:
    out = {k: getattr(sensor, k) for k in Sensor.__dataclass_fields__
           if k not in ("principal_point", "sensitivity")}
    if sensor.sensitivity != 1.0:  # written only where a calibration set it
        out["sensitivity"] = float(sensor.sensitivity)
    if sensor.principal_point is not None:
        out["principal_point_px"] = [float(v) for v in sensor.principal_point]
    return out


def system_to_dict(system: System) -> dict:
    """The TOML-ready dictionary of a system (poses written as rotations)."""
    cams = []
    for c in system.cameras:
        lens = c.lens
        ld: dict = {"model": lens.model, "f_number": float(lens.f_number)}
        if lens.model == "telecentric":
            ld["magnification"] = float(lens.telecentric_magnification)
            ld["working_distance_mm"] = float(lens.focus_distance_mm)
        else:
            ld["focal_length_mm"] = float(lens.focal_length_mm)
            ld["focus_distance_mm"] = float(lens.focus_distance_mm)
        if lens.distortion is not None:
            ld["distortion"] = _vec(lens.distortion)
        rot = c.pose.rotation.detach().cpu().to(torch.float64)
        cams.append({
            "name": c.name,
            "sensor": _sensor_dict(c.sensor),
            "lens": ld,
            "pose": {"position_mm": _vec(c.pose.position_mm),
                     "rotation": [_vec(row) for row in rot]},
        })
    mirrors = []
    for m in system.mirrors:
        md = {"name": m.name, "center_mm": _vec(m.center_mm), "normal": _vec(m.normal),
              "shape": m.shape, "reflectivity": float(m.reflectivity)}
        if m.shape == "circle":
            md["radius_mm"] = float(m.radius_mm)
        else:
            md["size_mm"] = [2 * v for v in _vec(m.half_size_mm)]
            md["u_axis"] = _vec(m.u_axis)
        mirrors.append(md)
    windows = [
        {"name": w.name, "center_mm": _vec(w.center_mm), "normal": _vec(w.normal),
         "thickness_mm": float(w.thickness_mm), "refractive_index": float(w.refractive_index),
         "aperture_radius_mm": float(w.aperture_radius_mm),
         **({} if w.mount_radius_mm is None else {"mount_radius_mm": float(w.mount_radius_mm)})}
        for w in system.windows
    ]
    out = {"schema": SCHEMA, "name": system.name}
    if system.description:
        out["description"] = system.description
    out["volume"] = {"min_mm": _vec(system.volume.min_mm), "max_mm": _vec(system.volume.max_mm)}
    out["cameras"] = cams
    if mirrors:
        out["mirrors"] = mirrors
    if windows:
        out["windows"] = windows
    return out


def save_system(system: System, path: str | os.PathLike, *, header: str = "") -> None:
    """Write a system file atomically; ``header`` lines are written as TOML comments."""
    import tomli_w


    text = tomli_w.dumps(system_to_dict(system))
    if header:
        text = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + "\n" + text
    atomic_write_text(path, text)
