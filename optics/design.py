"""Design of the default mirror dome (``data/systems/magis_dome.toml``) and view footprints.

The mirror layout of the MAGIS-100 multi-view imager is not public; this is our own design.
Rule: every mirror view must be in focus at once. The virtual image of the cloud in a flat
mirror lies at the distance ``|C − M| + |M − X|`` from the lens (C lens, M mirror centre, X cloud
centre), so the mirrors sit on a prolate ellipsoid with foci X and C whose path length equals
the lens's focus distance (plus the window's focal shift ``t(1 − 1/n)``). For a camera at
distance L on the −z axis and a mirror at polar angle θ from the back (+z) axis, the distance
from the cloud is ``D = (s² − L²) / (2 (s + L cos θ))`` with ``s`` the path length. Each mirror
is oriented so that the chief ray from the cloud centre reaches the lens centre. The direct view
is then out of focus by ``s − L`` and is kept as a low-resolution view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from optics.camera import Camera, Pose, Sensor, look_at_rotation
from optics.errors import ConfigError
from optics.lens import Lens
from optics.mirror import Mirror
from optics.rays import intersect_plane, normalize
from optics.system import Box, System
from optics.trace import blur_diameter_mm, project_points, trace_object_rays, virtual_points
from optics.window import Window, window_entry

__all__ = ["DomeDesign", "ViewRegion", "collected_fraction", "crossed_windows", "design_dome", "view_regions"]


@dataclass(frozen=True)
class DomeDesign:
    """Parameters of :func:`design_dome` (defaults: REFERENCE.md §1 numbers + our layout)."""

    focal_length_mm: float = 62.275
    magnification: float = 0.215
    f_number: float = 1.23
    width_px: int = 9600
    height_px: int = 6422
    pixel_pitch_um: float = 3.76
    quantum_efficiency: float = 0.77
    read_noise_e: float = 2.0
    gain_e_per_adu: float = 1.0
    offset_adu: float = 100.0
    bit_depth: int = 16
    camera_distance_mm: float = 314.0
    box_half_mm: float = 1.2
    rings: tuple[tuple[float, int, float], ...] = ((30.0, 6, 0.0), (55.0, 8, 22.5))
    mirror_radius_mm: float = 3.0
    reflectivity: float = 0.95
    window_distance_mm: float = 100.0
    window_thickness_mm: float = 6.35
    window_index: float = 1.4645  # fused silica at 461 nm
    window_aperture_radius_mm: float = 35.0


def design_dome(d: DomeDesign = DomeDesign()) -> System:
    """Build the mirror-dome instrument from a :class:`DomeDesign` (float64 geometry)."""
    f64 = torch.float64
    s_o = d.focal_length_mm * (1 + d.magnification) / d.magnification
    focal_shift = d.window_thickness_mm * (1 - 1 / d.window_index)
    path = s_o + focal_shift
    L = d.camera_distance_mm
    if not path > L:
        raise ConfigError(f"design_dome: the in-focus path ({path:.1f} mm: focus distance {s_o:.1f} mm plus "
                          f"the window's shift {focal_shift:.1f} mm) must be longer than the camera distance "
                          f"{L:g} mm, or no mirror shows the cloud in focus; lower the magnification or move "
                          "the camera closer")
    cam_pos = torch.tensor([0.0, 0.0, -L], dtype=f64)
    cloud = torch.zeros(3, dtype=f64)
    mirrors = []
    for ring, (theta_deg, count, phase_deg) in enumerate(d.rings):
        theta = math.radians(theta_deg)
        dist = (path**2 - L**2) / (2 * (path + L * math.cos(theta)))
        for i in range(count):
            phi = math.radians(phase_deg + 360.0 * i / count)
            u = torch.tensor([math.sin(theta) * math.cos(phi), math.sin(theta) * math.sin(phi),
                              math.cos(theta)], dtype=f64)
            centre = cloud + dist * u
            virtual = cam_pos + path * normalize(centre - cam_pos)
            normal = normalize(cloud - virtual)
            mirrors.append(Mirror(
                name=f"r{ring + 1}m{i + 1:02d}", center_mm=centre, normal=normal, shape="circle",
                radius_mm=torch.tensor(d.mirror_radius_mm, dtype=f64),
                half_size_mm=torch.zeros(2, dtype=f64), u_axis=torch.zeros(3, dtype=f64),
                reflectivity=torch.tensor(d.reflectivity, dtype=f64),
            ))
    sensor = Sensor(d.width_px, d.height_px, d.pixel_pitch_um, d.quantum_efficiency,
                    d.gain_e_per_adu, d.read_noise_e, d.offset_adu, d.bit_depth)
    t = lambda v: torch.tensor(v, dtype=f64)  # noqa: E731
    lens = Lens("thin", t(d.focal_length_mm), t(d.f_number), t(s_o), t(d.magnification))
    up = t([0.0, 1.0, 0.0])
    pose = Pose(cam_pos, look_at_rotation(cam_pos, cloud, up))
    window = Window("viewport", t([0.0, 0.0, -d.window_distance_mm]), t([0.0, 0.0, 1.0]),
                    t(d.window_thickness_mm), t(d.window_index), t(d.window_aperture_radius_mm))
    h = d.box_half_mm
    return System(
        name="magis_dome",
        volume=Box(t([-h, -h, -h]), t([h, h, h])),
        cameras=(Camera("main", sensor, lens, pose),),
        mirrors=tuple(mirrors),
        windows=(window,),
        description=(
            "Single-shot multi-view imager after the MAGIS-100 / SLAC light-field design. Lens and "
            "sensor from REFERENCE.md §1 (magis-slac public code). Mirror layout: our own design "
            "(mirrors on an ellipsoid with foci at the cloud and the lens, so all mirror views are "
            "in focus); regenerate with `recon system design`."
        ),
    )


@dataclass(frozen=True)
class ViewRegion:
    """Where one path's view of the box lands on the sensor.

    Attributes:
        path: 0 direct, k mirror k − 1.
        name: path name.
        roi: (x0, y0, width, height) full-sensor pixels (x0 column, y0 row of the top-left).
        polar_deg: angle between the viewing direction (cloud → camera or mirror) and the back
            (+z) axis of the box frame... measured from the camera axis for the direct view.
        azimuth_deg: azimuth of the viewing direction about the z axis.
        magnification: lateral magnification at the virtual image of the box centre.
        defocus_mm: distance of the virtual box centre from the plane of focus, mm.
        blur_px: defocus blur diameter of the box centre, px.
    """

    path: int
    name: str
    roi: tuple[int, int, int, int]
    polar_deg: float
    azimuth_deg: float
    magnification: float
    defocus_mm: float
    blur_px: float


def view_regions(system: System, camera: int = 0, margin_px: int = 4) -> list[ViewRegion]:
    """Sensor regions of interest holding each path's view of the reconstruction box.

    The eight box corners are mirrored into the path's virtual space and projected along chief
    rays; the region grows by the defocus blur radius of the corners and ``margin_px``.
    """
    cam: Camera = system.cameras[camera]
    sys64 = system.to(torch.float64)
    cam64 = sys64.cameras[camera]
    corners = sys64.volume.corners()
    centre = sys64.volume.center_mm
    pitch = cam.sensor.pixel_pitch_mm
    out = []
    for path in range(system.n_paths):
        # Paraxial focal shift of the windows this view looks through: a slab brings images
        # closer by t(1 − 1/n).
        shift = sum(float(w.thickness_mm * (1 - 1 / w.refractive_index))
                    for w in crossed_windows(sys64, camera, centre, path))
        pts = virtual_points(sys64, corners, path)
        uv, depth = project_points(cam64, pts)
        depth = depth - shift
        blur = blur_diameter_mm(cam64, depth) / pitch
        lo = (uv - 0.5 * blur.unsqueeze(-1)).min(0).values - margin_px
        hi = (uv + 0.5 * blur.unsqueeze(-1)).max(0).values + margin_px
        x0, y0 = (int(math.floor(v)) for v in lo)
        x1, y1 = (int(math.ceil(v)) for v in hi)
        vc = virtual_points(sys64, centre, path)
        _, depth_c = project_points(cam64, vc)
        depth_c = depth_c - shift
        if path == 0:
            view_dir = normalize(cam64.pose.position_mm - centre)
        else:
            view_dir = normalize(sys64.mirrors[path - 1].center_mm - centre)
        polar = math.degrees(math.acos(max(-1.0, min(1.0, float(view_dir[2])))))
        azimuth = math.degrees(math.atan2(float(view_dir[1]), float(view_dir[0]))) % 360.0
        lens = cam64.lens
        out.append(ViewRegion(
            path=path, name=system.path_name(path), roi=(x0, y0, x1 - x0 + 1, y1 - y0 + 1),
            polar_deg=polar, azimuth_deg=azimuth,
            magnification=float(lens.image_distance_mm / depth_c),
            defocus_mm=float(depth_c - lens.focus_distance_mm),
            blur_px=float(blur_diameter_mm(cam64, depth_c) / pitch),
        ))
    return out


def crossed_windows(system: System, camera: int, point: torch.Tensor, path: int) -> list[Window]:
    """The windows the chief ray of ``point`` seen along ``path`` crosses between lens and point.

    The straight line from the lens centre toward the point's virtual image, up to the image
    (direct view) or up to the mirror's plane (a mirror view: beyond it the light comes from the
    mirror, not along the line): the windows whose clear aperture it crosses there.
    """
    origin = system.cameras[camera].pose.position_mm
    target = virtual_points(system, point.reshape(-1, 3)[:1], path)[0]
    offset = target - origin
    length = offset.norm()
    direction = (offset / length)[None]
    if path > 0:
        mirror = system.mirrors[path - 1]
        t, ok = intersect_plane(origin[None], direction, mirror.center_mm, mirror.normal)
        length = torch.where(ok[0], torch.minimum(t[0], length), length)
    out = []
    for w in system.windows:
        t, crosses, _ = window_entry(w, origin[None].to(w.center_mm.dtype), direction.to(w.center_mm.dtype))
        if bool(crosses[0]) and float(t[0]) < float(length):
            out.append(w)
    return out


def collected_fraction(
    system: System, point: torch.Tensor, path: int, *, camera: int = 0, n: int = 4096, seed: int = 0
) -> float:
    """Fraction of the photons emitted isotropically at ``point`` that reach the lens by ``path``.

    Monte-Carlo over the aperture: rays from aperture points toward the point's virtual image,
    traced through windows and mirrors; a ray counts (weighted by the solid angle it stands for,
    the mirror's reflectivity and the window transmission) if its segment of ``path`` crosses
    the box. Sensor QE is not included.

    The solid angle of an aperture element is that seen from the point's *apparent* position:
    a window (a plane slab of thickness t and index n) brings it closer along the ray by
    ``t (1 − cos θ / (n cos θ'))`` (θ, θ' the angles to the slab's normal outside and inside;
    ``t (1 − 1/n)`` on axis), so the lens collects ≈ ``2 t (1 − 1/n) / D`` more than from the
    true distance D (1.3 % for the default dome's viewport).
    """
    sys64 = system.to(torch.float64)
    cam = sys64.cameras[camera]
    gen = torch.Generator().manual_seed(seed)
    r = torch.sqrt(torch.rand(n, generator=gen, dtype=torch.float64))
    phi = 2 * math.pi * torch.rand(n, generator=gen, dtype=torch.float64)
    radius = cam.lens.aperture_radius_mm
    a_cam = torch.stack([r * torch.cos(phi) * radius, r * torch.sin(phi) * radius,
                         torch.zeros_like(r)], -1)
    origins = cam.pose.to_world(a_cam)
    target = virtual_points(sys64, point.to(torch.float64), path)
    offset = target - origins
    dist = offset.norm(dim=-1)
    directions = offset / dist.unsqueeze(-1)
    axis = cam.pose.rotation[:, 2]
    cos_a = (directions * axis).sum(-1)
    for w in crossed_windows(sys64, camera, point.to(torch.float64), path):  # apparent distance through each
        cos_out = (directions @ w.normal / w.normal.norm()).abs().clamp(max=1.0)
        cos_in = torch.sqrt(1 - (1 - cos_out**2) / w.refractive_index**2)
        dist = dist - w.thickness_mm * (1 - cos_out / (w.refractive_index * cos_in))
    solid = math.pi * radius**2 / n * cos_a / dist**2
    traced = trace_object_rays(sys64, origins, directions, torch.ones(n, dtype=torch.float64))
    return float((solid * traced.weights[:, path]).sum() / (4 * math.pi))
