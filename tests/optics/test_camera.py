"""Sensors, poses and cameras: pixel ↔ mm conversions, look-at rotations, frame changes, crops."""

import math

import pytest
import torch

from optics.camera import Camera, Pose, Sensor, look_at_rotation, roi_pixel_centers
from tests.conftest import TOL
from tests.optics.helpers import make_system

F64 = torch.float64
SENSOR = Sensor(
    width_px=2001,
    height_px=1501,
    pixel_pitch_um=3.76,
    quantum_efficiency=0.77,
    gain_e_per_adu=1.0,
    read_noise_e=2.0,
    offset_adu=100.0,
    bit_depth=16,
)


def _random_pose(generator: torch.Generator) -> Pose:
    position = 100.0 * torch.randn(3, generator=generator, dtype=F64)
    target = torch.randn(3, generator=generator, dtype=F64)
    up = torch.randn(3, generator=generator, dtype=F64)
    return Pose(position, look_at_rotation(position, target, up))


# --------------------------------------------------------------------------------------- sensor


def test_sensor_derived_numbers():
    assert SENSOR.pixel_pitch_mm == pytest.approx(3.76e-3)
    assert SENSOR.pixel_area_mm2 == pytest.approx(3.76e-3**2)
    assert SENSOR.saturation_adu == 65535
    twelve_bit = Sensor(10, 10, 5.0, 0.5, 1.0, 1.0, 0.0, 12)
    assert twelve_bit.saturation_adu == 4095


def test_principal_point_is_the_sensor_centre_and_maps_to_zero_mm():
    # (W − 1)/2, (H − 1)/2: the centre of the middle pixel for odd sizes, between two for even.
    assert SENSOR.principal_point_px == (1000.0, 750.0)
    assert Sensor(4, 2, 1.0, 1.0, 1.0, 0.0, 0.0, 8).principal_point_px == (1.5, 0.5)
    centre = torch.tensor(SENSOR.principal_point_px, dtype=F64)
    assert torch.equal(SENSOR.to_sensor_mm(centre), torch.zeros(2, dtype=F64))
    assert torch.equal(SENSOR.to_pixels(torch.zeros(2, dtype=F64)), centre)


def test_top_left_pixel_is_up_and_left_of_the_axis():
    """OpenCV convention: u right, v down, so pixel (0, 0) sits at negative x and y in mm."""
    xy = SENSOR.to_sensor_mm(torch.zeros(2, dtype=F64))
    pitch = SENSOR.pixel_pitch_mm
    assert xy.tolist() == pytest.approx([-1000.0 * pitch, -750.0 * pitch], rel=1e-12)
    # one pixel right is one pitch further along +x, one pixel down one pitch along +y
    step = SENSOR.to_sensor_mm(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)) - xy
    expected = torch.tensor([[pitch, 0.0], [0.0, pitch]], dtype=F64)
    torch.testing.assert_close(step, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("batch", [(), (1,), (2, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pixel_mm_round_trip_keeps_shape_and_dtype(batch, dtype):
    g = torch.Generator().manual_seed(0)
    uv = torch.rand(*batch, 2, generator=g, dtype=F64) * torch.tensor([2001.0, 1501.0], dtype=F64)
    uv = uv.to(dtype)
    xy = SENSOR.to_sensor_mm(uv)
    back = SENSOR.to_pixels(xy)
    assert xy.shape == uv.shape and xy.dtype == dtype and back.dtype == dtype
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(back, uv, rtol=rtol, atol=atol)
    mm = torch.rand(*batch, 2, generator=g, dtype=F64).to(dtype) - 0.5
    torch.testing.assert_close(SENSOR.to_sensor_mm(SENSOR.to_pixels(mm)), mm, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------- roi_pixel_centers


def test_roi_pixel_centers_shape_order_and_dtype():
    x0, y0, w, h = 7, 3, 4, 2
    c = roi_pixel_centers((x0, y0, w, h))
    assert c.shape == (h, w, 2) and c.dtype == torch.float32
    assert c[0, 0].tolist() == [7.0, 3.0]  # (u, v) = (column, row) of the top-left pixel
    assert c[1, 3].tolist() == [10.0, 4.0]  # entry [i, j] is (x0 + j, y0 + i)
    # reshape(-1) row-major order matches an image's reshape(-1): index k is row k // w, col k % w
    flat = c.reshape(-1, 2)
    k = torch.arange(h * w)
    assert torch.equal(flat[:, 0], (x0 + k % w).float())
    assert torch.equal(flat[:, 1], (y0 + k // w).float())
    assert roi_pixel_centers((x0, y0, w, h), dtype=F64).dtype == F64


def test_roi_pixel_centers_of_a_single_row_and_column():
    assert roi_pixel_centers((5, 9, 3, 1), dtype=F64).tolist() == [[[5.0, 9.0], [6.0, 9.0], [7.0, 9.0]]]
    assert roi_pixel_centers((5, 9, 1, 2), dtype=F64).tolist() == [[[5.0, 9.0]], [[5.0, 10.0]]]


def test_roi_pixel_centers_index_the_full_sensor_image():
    """Reading a full-sensor image at the crop's centres gives the crop itself."""
    image = torch.arange(20 * 30, dtype=F64).reshape(20, 30)
    roi = (4, 11, 6, 5)
    c = roi_pixel_centers(roi).long()
    crop = image[roi[1] : roi[1] + roi[3], roi[0] : roi[0] + roi[2]]
    assert torch.equal(image[c[..., 1], c[..., 0]], crop)


# ----------------------------------------------------------------------------- look_at_rotation


@pytest.mark.parametrize("seed", range(5))
def test_look_at_rotation_is_a_proper_rotation_looking_at_the_target(seed):
    g = torch.Generator().manual_seed(seed)
    position = 100.0 * torch.randn(3, generator=g, dtype=F64)
    target = torch.randn(3, generator=g, dtype=F64)
    up = torch.randn(3, generator=g, dtype=F64)
    r = look_at_rotation(position, target, up)
    assert r.shape == (3, 3)
    torch.testing.assert_close(r.T @ r, torch.eye(3, dtype=F64), rtol=0.0, atol=1e-12)
    assert float(torch.linalg.det(r)) == pytest.approx(1.0, abs=1e-12)  # right-handed
    x, y, z = r.unbind(-1)
    torch.testing.assert_close(torch.linalg.cross(x, y), z, rtol=0.0, atol=1e-12)
    # the camera z axis points at the target
    torch.testing.assert_close(z, (target - position) / (target - position).norm(), rtol=0.0, atol=1e-12)
    # image up (−y) is the projection of `up` onto the image plane
    up_in_plane = up - (up @ z) * z
    torch.testing.assert_close(-y, up_in_plane / up_in_plane.norm(), rtol=0.0, atol=1e-12)


def test_look_at_rotation_of_the_nominal_camera():
    """Camera on −z looking at the origin, up = +y: x = −X, y = −Y, z = +Z (OpenCV frame)."""
    r = look_at_rotation(
        torch.tensor([0.0, 0.0, -350.0], dtype=F64),
        torch.zeros(3, dtype=F64),
        torch.tensor([0.0, 1.0, 0.0], dtype=F64),
    )
    assert r.tolist() == [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]


@pytest.mark.parametrize("batch", [(1,), (2, 3)])
def test_look_at_rotation_batches(batch):
    g = torch.Generator().manual_seed(1)
    position = torch.randn(*batch, 3, generator=g, dtype=F64) * 50.0
    target = torch.randn(*batch, 3, generator=g, dtype=F64)
    up = torch.randn(*batch, 3, generator=g, dtype=F64)
    r = look_at_rotation(position, target, up)
    assert r.shape == (*batch, 3, 3)
    flat = [look_at_rotation(p, t, u) for p, t, u in zip(position.reshape(-1, 3), target.reshape(-1, 3),
                                                       up.reshape(-1, 3), strict=True)]
    torch.testing.assert_close(r.reshape(-1, 3, 3), torch.stack(flat), rtol=0.0, atol=1e-14)


def test_look_at_rotation_gradcheck():
    g = torch.Generator().manual_seed(2)
    inputs = tuple(
        (torch.randn(3, generator=g, dtype=F64) * s).requires_grad_(True) for s in (20.0, 1.0, 1.0)
    )
    assert torch.autograd.gradcheck(look_at_rotation, inputs)


# --------------------------------------------------------------------------------------- pose


@pytest.mark.parametrize("batch", [(), (1,), (2, 3)])
def test_to_world_and_to_camera_are_inverse(batch):
    g = torch.Generator().manual_seed(3)
    pose = _random_pose(g)
    p_cam = torch.randn(*batch, 3, generator=g, dtype=F64) * 10.0
    p_world = pose.to_world(p_cam)
    assert p_world.shape == p_cam.shape
    torch.testing.assert_close(pose.to_camera(p_world), p_cam, rtol=0.0, atol=1e-11)
    torch.testing.assert_close(pose.to_world(pose.to_camera(p_cam)), p_cam, rtol=0.0, atol=1e-11)


def test_pose_places_the_lens_and_the_axis():
    g = torch.Generator().manual_seed(4)
    pose = _random_pose(g)
    zero = torch.zeros(3, dtype=F64)
    torch.testing.assert_close(pose.to_world(zero), pose.position_mm, rtol=0.0, atol=1e-12)
    torch.testing.assert_close(pose.to_camera(pose.position_mm), zero, rtol=0.0, atol=1e-12)
    # a point 5 mm ahead on the optical axis is (0, 0, 5) in the camera frame
    ahead = pose.position_mm + 5.0 * pose.rotation[:, 2]
    torch.testing.assert_close(pose.to_camera(ahead), torch.tensor([0.0, 0.0, 5.0], dtype=F64),
                               rtol=0.0, atol=1e-11)


def test_directions_rotate_without_translation_and_keep_length():
    g = torch.Generator().manual_seed(5)
    pose = _random_pose(g)
    d = torch.randn(4, 3, generator=g, dtype=F64)
    d_world = pose.directions_to_world(d)
    torch.testing.assert_close(d_world.norm(dim=-1), d.norm(dim=-1), rtol=1e-12, atol=0.0)
    # a direction is the difference of two points: translation drops out
    torch.testing.assert_close(d_world, pose.to_world(d) - pose.to_world(torch.zeros(3, dtype=F64)),
                               rtol=0.0, atol=1e-11)
    torch.testing.assert_close(pose.directions_to_world(torch.eye(3, dtype=F64)), pose.rotation.T,
                               rtol=0.0, atol=1e-15)


def test_pose_to_changes_dtype_and_leaves_the_original():
    pose = _random_pose(torch.Generator().manual_seed(6))
    p32 = pose.to(torch.float32)
    assert p32.position_mm.dtype == torch.float32 and p32.rotation.dtype == torch.float32
    assert pose.position_mm.dtype == F64
    torch.testing.assert_close(p32.rotation.double(), pose.rotation, rtol=0.0, atol=1e-7)


# ------------------------------------------------------------------------------------- camera


def test_camera_to_moves_lens_and_pose_and_keeps_the_rest():
    cam = make_system(dtype=torch.float32).cameras[0]
    assert isinstance(cam, Camera) and cam.lens.focal_length_mm.dtype == torch.float32
    c64 = cam.to(F64)
    lens_tensors = (c64.lens.focal_length_mm, c64.lens.f_number, c64.lens.focus_distance_mm,
                    c64.lens.telecentric_magnification)
    assert all(t.dtype == F64 for t in lens_tensors)
    assert c64.pose.position_mm.dtype == F64 and c64.pose.rotation.dtype == F64
    assert c64.lens.distortion is None  # None stays None
    assert c64.name == cam.name and c64.sensor == cam.sensor and c64.lens.model == cam.lens.model
    assert cam.pose.rotation.dtype == torch.float32  # a copy: the original is untouched
    assert float(c64.lens.focal_length_mm) == pytest.approx(62.275, rel=1e-7)
    assert math.isclose(float(c64.pose.position_mm[2]), float(cam.pose.position_mm[2]))


def test_camera_to_converts_distortion():
    lens = {"model": "thin", "focal_length_mm": 62.275, "f_number": 1.23, "magnification": 0.215,
            "distortion": [0.01, -0.002, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]}
    cam = make_system(dtype=torch.float32, lens=lens).cameras[0]
    c64 = cam.to(F64)
    assert c64.lens.distortion.dtype == F64
    assert c64.lens.distortion[:2].tolist() == pytest.approx([0.01, -0.002], rel=1e-6)
