"""The crossview prior: projection in nerfstudio's camera convention, the per-block evidence, and its
place in the neighbourhood prior's shrinkage, on hand-built cameras with known answers."""

import math

import pytest
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType

from evos_nerf.core.crossview import CrossViewErrors, PinholeViews, project
from evos_nerf.core.neighbourhood import block_estimate
from evos_nerf.core.selector import RaySelector, SelectorConfig
from evos_nerf.core.store import FitnessStore


def _views(num: int = 2, size: int = 8, focal: float = 8.0) -> PinholeViews:
    """``num`` identical cameras at the origin looking down -z: pixel (y, x) sees ((x + .5 - c) / f, -(y + .5 - c) / f, -1)."""
    pose = torch.eye(4)[:3].expand(num, 3, 4).clone()
    full = lambda v: torch.full((num,), float(v))  # noqa: E731
    sizes = torch.full((num,), size, dtype=torch.long)
    return PinholeViews(pose, full(focal), full(focal), full(size / 2), full(size / 2), sizes, sizes)


def _point(y: int, x: int, size: int = 8, focal: float = 8.0, depth: float = 1.0) -> list:
    c = size / 2
    return [depth * (x + 0.5 - c) / focal, -depth * (y + 0.5 - c) / focal, -depth]


def test_projection_finds_the_pixel_a_point_was_seen_through_and_rejects_points_behind_or_outside():
    views = _views(1, size=10, focal=10.0)
    points = torch.tensor([[0.0, 0.0, -1.0], [0.2, 0.1, -1.0], [0.0, 0.0, 1.0], [1.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    rows, cols, inside = project(views, points)
    assert inside[:, 0].tolist() == [True, True, False, False, False]
    assert (rows[0, 0].item(), cols[0, 0].item()) == (5, 5)
    assert (rows[1, 0].item(), cols[1, 0].item()) == (4, 7)  # up in the world is up in the image: a smaller row


def test_projection_inverts_nerfstudio_ray_generation_for_a_rotated_offset_camera():
    torch.manual_seed(0)
    angle = 0.4
    rotation = torch.tensor([[math.cos(angle), 0.0, math.sin(angle)], [0.0, 1.0, 0.0], [-math.sin(angle), 0.0, math.cos(angle)]])
    pose = torch.cat([rotation, torch.tensor([[0.3], [-0.2], [1.5]])], dim=1)[None]
    cameras = Cameras(pose, fx=30.0, fy=28.0, cx=19.0, cy=13.0, width=40, height=24, camera_type=CameraType.PERSPECTIVE)
    pixels = torch.tensor([[0, 0], [5, 17], [23, 39], [12, 20]])
    rays = cameras.generate_rays(camera_indices=torch.zeros(len(pixels), 1, dtype=torch.long), coords=pixels.float() + 0.5)
    depth = torch.tensor([[0.5], [2.0], [7.0], [1.0]])
    points = rays.origins + rays.directions * depth
    views = PinholeViews(pose, torch.tensor([30.0]), torch.tensor([28.0]), torch.tensor([19.0]), torch.tensor([13.0]),
                         torch.tensor([24]), torch.tensor([40]))
    rows, cols, inside = project(views, points)
    assert inside.all()
    assert torch.equal(torch.stack([rows[:, 0], cols[:, 0]], dim=1), pixels)


def test_a_ray_counts_in_every_other_camera_that_sees_its_point_and_the_evidence_starts_afresh_once_taken():
    evidence = CrossViewErrors(_views(3), block=4)
    points = torch.tensor([_point(1, 1), _point(6, 5), [float("nan"), 0.0, -1.0]])
    evidence.add(points, torch.tensor([0.5, 0.2, 9.0]), source=torch.tensor([0, 2, 1]))
    blocks = evidence.take(lambda t: t)
    sums, counts = zip(*(blocks.image(c) for c in range(3)))
    # Ray 0 (camera 0, block (0, 0)) lands in cameras 1 and 2; ray 1 (camera 2, block (1, 1)) in 0 and 1; the NaN point nowhere.
    assert counts[0].tolist() == [[0, 0], [0, 1]] and sums[0][1, 1].item() == pytest.approx(0.2)
    assert counts[1].tolist() == [[1, 0], [0, 1]] and sums[1][0, 0].item() == pytest.approx(0.5)
    assert counts[2].tolist() == [[1, 0], [0, 0]]
    assert float(evidence.counts.sum()) == 0 and float(evidence.sums.sum()) == 0


def test_the_evidence_is_a_level_between_a_block_and_its_image():
    values, seen = torch.zeros(16), torch.zeros(16)
    values[0], seen[0] = 0.9, 1.0  # one measured pixel in block (0, 0)
    sums, counts = torch.tensor([[3.0, 0.0], [0.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    estimate = block_estimate(values, seen, 4, 4, 0.3, 2, evidence=(sums, counts))
    image = (0.9 + 0.3) / 2  # the image's one measurement and one pseudo-observation at the global mean
    crossview = (3.0 + image) / 3  # two readings and one pseudo-observation at the image
    assert estimate[0, 0].item() == pytest.approx((0.9 + crossview) / 2)
    assert estimate[1, 1].item() == pytest.approx(image)
    assert torch.equal(block_estimate(values, seen, 4, 4, 0.3, 2, evidence=(torch.zeros(2, 2), torch.zeros(2, 2))),
                       block_estimate(values, seen, 4, 4, 0.3, 2))


def _selector(prior: str) -> RaySelector:
    config = SelectorConfig(strategy="topk", ratio=0.25, mutation=0.0, unvisited_prior=prior, prior_block=4,
                            init_interval=2, end_interval=2)
    store = FitnessStore([(8, 8), (8, 8)])
    return RaySelector(config, store, batch_size=2, generator=torch.Generator().manual_seed(0), total_steps=10, views=_views())


@pytest.mark.parametrize("prior", ["crossview", "crossview-pooled"])
def test_a_never_visited_camera_ranks_the_block_another_view_saw_failing(prior):
    selector = _selector(prior)
    selector.maybe_evolve(0)
    flat = selector.store.flat_index(torch.tensor([0, 0]), torch.tensor([1, 5]), torch.tensor([1, 5]))
    points = torch.tensor([_point(1, 1), _point(5, 5)])
    selector.observe(flat, torch.tensor([1.0, 0.01]), 0, points=points)
    assert selector.wants_points
    selector.maybe_evolve(1)
    assert selector.maybe_evolve(2)  # a key iteration: the ranking takes the evidence
    assert float(selector.crossview.counts.sum()) == 0
    # Global mean g = 0.505, camera 1's image mean g too; its block (0, 0) holds one reading of 1.0:
    # (1.0 + g) / 2 = 0.7525 (as a level or as a measurement: the block has none of its own), the same as the 15 never-visited pixels next to camera 0's measured 1.0.
    members = selector.store.unflatten(selector.pool.members())
    expected = {(c, y, x) for c in (0, 1) for y in range(4) for x in range(4)}
    assert {tuple(m) for m in members.tolist()} == expected


def test_the_crossview_prior_needs_the_cameras():
    with pytest.raises(ValueError, match="needs the training cameras"):
        RaySelector(SelectorConfig(unvisited_prior="crossview"), FitnessStore([(8, 8)]), 2, torch.Generator())


def test_a_checkpoint_keeps_the_readings_of_the_open_key_interval():
    original, resumed = _selector("crossview"), _selector("crossview")
    original.maybe_evolve(0)
    flat = original.store.flat_index(torch.tensor([0]), torch.tensor([1]), torch.tensor([1]))
    original.observe(flat, torch.tensor([1.0]), 0, points=torch.tensor([_point(1, 1)]))
    resumed.load_sharded_state(original.sharded_state(), same_world_size=True)
    assert torch.equal(resumed.crossview.state_tensor(), original.crossview.state_tensor())
    assert float(resumed.crossview.counts.sum()) == 1


def test_pooled_evidence_counts_as_measurements_of_the_block():
    values, seen = torch.zeros(16), torch.zeros(16)
    values[0], seen[0] = 0.9, 1.0
    sums, counts = torch.tensor([[3.0, 0.0], [0.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    estimate = block_estimate(values, seen, 4, 4, 0.3, 2, evidence=(sums, counts), pooled=True)
    image = (0.9 + 0.3) / 2
    assert estimate[0, 0].item() == pytest.approx((0.9 + 3.0 + image) / 4)  # three measurements and the image
    assert estimate[1, 1].item() == pytest.approx(image)


def test_pooled_evidence_refuses_the_settings_that_fit_a_spread_it_is_not_part_of():
    from evos_nerf.errors import UserInputError

    with pytest.raises(UserInputError, match="prior-bonus"):
        SelectorConfig(unvisited_prior="crossview-pooled", prior_bonus=1.0).validate()


def test_the_occlusion_test_drops_a_reading_behind_the_surface_its_camera_sees_there():
    def camera_one_counts(occlusion):
        evidence = CrossViewErrors(_views(2), block=4, occlusion=occlusion)
        # Camera 1's own ray finds its surface at depth 1 in its block (0, 0); its block (1, 1) is never trained.
        evidence.add(torch.tensor([_point(1, 1)]), torch.tensor([0.1]), source=torch.tensor([1]))
        # Camera 0's rays: behind that surface (depth 2), just in front of the tolerance (1.05), and in the untrained block.
        points = torch.tensor([_point(1, 1, depth=2.0), _point(2, 2, depth=1.05), _point(5, 5, depth=3.0)])
        evidence.add(points, torch.tensor([0.5, 0.6, 0.7]), source=torch.tensor([0, 0, 0]))
        return evidence.take(lambda t: t).image(1)[1], evidence

    counts, evidence = camera_one_counts(0.1)
    assert counts.tolist() == [[1, 0], [0, 1]]
    assert camera_one_counts(None)[0].tolist() == [[2, 0], [0, 1]]
    # The surface outlives the key interval, so the next interval's hidden readings are dropped too.
    assert evidence.surface[evidence.offsets[1]].item() == pytest.approx(1.0) and float(evidence.surface_now.sum()) == 0
    evidence.add(torch.tensor([_point(0, 0, depth=1.5)]), torch.tensor([0.5]), source=torch.tensor([0]))
    assert float(evidence.counts[evidence.offsets[1]:].sum()) == 0


def test_a_checkpoint_from_before_the_occlusion_test_loads_without_depths():
    evidence = CrossViewErrors(_views(2), block=4, occlusion=0.1)
    evidence.load_state_tensor(torch.stack([torch.ones(8), torch.full((8,), 2.0)]))
    assert evidence.counts.tolist() == [2.0] * 8 and float(evidence.surface.sum()) == 0
    with pytest.raises(ValueError, match="shape"):
        evidence.load_state_tensor(torch.zeros(3, 8))


def test_the_occlusion_tolerance_is_checked_and_needs_a_crossview_prior():
    from evos_nerf.errors import UserInputError

    with pytest.raises(UserInputError, match="crossview-occlusion needs .*unvisited-prior"):
        SelectorConfig(crossview_occlusion=0.1).validate()
    with pytest.raises(UserInputError, match="crossview-occlusion must be"):
        SelectorConfig(unvisited_prior="crossview", crossview_occlusion=-1.0).validate()
