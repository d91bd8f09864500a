import math

import torch

from optics.window import Window, fresnel_transmittance, refract, trace_window


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
