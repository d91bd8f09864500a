import math

import torch

from optics.window import Window, fresnel_transmittance, refract, through_windows, trace_window


def _window(t=6.35, n=1.4645):
    f = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return Window("w", f([0.0, 0.0, 0.0]), f([0.0, 0.0, 1.0]), f(t), f(n), f(35.0))


def test_slab_keeps_directions_and_shifts_by_textbook_amount():
    w = _window()
    for theta_deg in (0.0, 10.0, 30.0, 50.0):
        th = math.radians(theta_deg)
        d = torch.tensor([[math.sin(th), 0.0, math.cos(th)]], dtype=torch.float64)
        o = torch.tensor([[0.0, 0.0, -20.0]], dtype=torch.float64)
        o2, d2, trans, ok = trace_window(w, o, d)
        assert ok.all()
        assert torch.allclose(d2, d, atol=1e-12)
        # perpendicular distance between the incoming line and the outgoing line
        diff = o2[0] - o[0]
        lateral = (diff - (diff @ d[0]) * d[0]).norm()
        n, t = 1.4645, 6.35
        expected = t * math.sin(th) * (1 - math.cos(th) / math.sqrt(n**2 - math.sin(th) ** 2))
        assert abs(lateral.item() - expected) < 1e-10
        assert 0.85 < trans.item() <= 1.0


def test_normal_incidence_fresnel():
    n = 1.5
    one = torch.tensor(1.0, dtype=torch.float64)
    t = fresnel_transmittance(one, one, 1.0, n)
    assert abs(t.item() - (1 - ((n - 1) / (n + 1)) ** 2)) < 1e-12


def test_total_internal_reflection_is_flagged():
    d = torch.tensor([math.sin(1.2), 0.0, math.cos(1.2)], dtype=torch.float64)
    _, _, ok = refract(d, torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64), 1.5)
    assert not ok


def test_outside_aperture_blocked_and_behind_unaffected():
    w = _window()
    o = torch.tensor([[40.0, 0.0, -20.0], [0.0, 0.0, 20.0]], dtype=torch.float64)
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    o2, _, trans, ok = trace_window(w, o, d)
    assert ok.tolist() == [False, True]
    assert trans.tolist() == [0.0, 1.0] and torch.equal(o2[1], o[1])


def _slab(z, radius=35.0, mount=None, t=6.35, n=1.4645, normal=(0.0, 0.0, 1.0)):
    f = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return Window(f"w{z}", f([0.0, 0.0, z]), f(list(normal)), f(t), f(n), f(radius),
                  None if mount is None else f(mount))


def _oblique_rays():
    d = torch.tensor([[0.3, 0.1, 1.0], [-0.2, 0.25, 1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return torch.zeros(3, 3, dtype=torch.float64) - torch.tensor([0.0, 0.0, 50.0], dtype=torch.float64), \
        d / d.norm(dim=-1, keepdim=True)


def test_windows_act_in_the_order_the_ray_meets_them_whatever_their_order_in_the_file():
    o, d = _oblique_rays()
    near, far = _slab(-20.0, n=1.46), _slab(10.0, t=3.0, n=1.8)
    o1, d1, t1, ok1 = trace_window(near, o, d)
    o2, d2, t2, ok2 = trace_window(far, o1, d1)
    expected = (o2, d2, t1 * t2)
    for order in ((near, far), (far, near)):
        got = through_windows(order, o, d)
        for a, b in zip(got, expected, strict=True):
            assert torch.equal(a, b)
    assert ok1.all() and ok2.all()


def test_a_ray_outside_a_windows_aperture_passes_untouched_unless_it_meets_the_mount():
    o = torch.tensor([[40.0, 0.0, -20.0], [0.0, 0.0, -20.0]], dtype=torch.float64)
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    o2, d2, trans = through_windows((_slab(0.0),), o, d)
    assert torch.equal(o2[0], o[0]) and torch.equal(d2[0], d[0]) and trans[0] == 1.0
    assert 0.9 < trans[1] < 1.0 and o2[1, 2] > 0  # the other crossed the slab
    _, _, trans = through_windows((_slab(0.0, mount=45.0),), o, d)
    assert trans[0] == 0.0 and 0.9 < trans[1] < 1.0
    _, _, trans = through_windows((_slab(0.0, mount=39.0),), o, d)
    assert trans[0] == 1.0


def test_a_window_beyond_the_end_of_a_rays_leg_does_not_act():
    o, d = _oblique_rays()
    beyond = _slab(30.0)

    def leg_end(origins, directions, t):
        return torch.full_like(t, 60.0)  # the leg ends at t = 60 mm, before z = 30 (t ≥ 80)

    o2, d2, trans = through_windows((beyond,), o, d, leg_end)
    assert torch.equal(o2, o) and torch.equal(d2, d) and (trans == 1).all()
    o3, _, trans = through_windows((beyond,), o, d, lambda *_: torch.full_like(o[:, 0], 1e3))
    assert not torch.equal(o3, o) and (trans < 1).all()
