import math

import pytest
import torch

from evos_nerf.core.laplacian import laplacian_of_rgb
from evos_nerf.core.pool import rank_pixels
from evos_nerf.core.store import EPOCH_MAX, FitnessStore


def test_flat_index_round_trips_across_images_of_different_sizes():
    store = FitnessStore([(4, 5), (3, 3), (2, 7)])
    assert store.num_pixels == 20 + 9 + 14
    flat = torch.arange(store.num_pixels)
    cyx = store.unflatten(flat)
    assert torch.equal(store.flat_index(cyx[:, 0], cyx[:, 1], cyx[:, 2]), flat)
    assert cyx[20].tolist() == [1, 0, 0] and cyx[-1].tolist() == [2, 1, 6]


def test_images_of_one_size_locate_pixels_as_the_general_path_does():
    same = FitnessStore([(3, 5)] * 4, cameras=[7, 2, 9, 4], num_cameras=10)
    mixed = FitnessStore([(3, 5)] * 3 + [(5, 3)], cameras=[7, 2, 9, 4], num_cameras=10)
    assert same.image_size == 15 and mixed.image_size is None
    flat = torch.arange(same.num_pixels)
    assert torch.equal(same.unflatten(flat)[:45], mixed.unflatten(flat)[:45])
    cyx = same.unflatten(flat)
    assert torch.equal(same.flat_index(cyx[:, 0], cyx[:, 1], cyx[:, 2]), flat)
    assert cyx[15].tolist() == [2, 0, 0] and cyx[-1].tolist() == [4, 2, 4]
    for store in (same, mixed):  # the camera alone, as the crossview prior reads it
        assert torch.equal(store.camera_of(flat), store.unflatten(flat)[:, 0])


def test_a_pixel_drawn_twice_in_a_batch_keeps_its_last_error_and_the_totals_stay_exact():
    store = FitnessStore([(2, 4)], dtype=torch.float32, track_visits=True)
    store.fitness[7] = float("nan")  # masked
    store.refresh_counts()
    flat = torch.tensor([5, 1, 5, 3, 7, 5, 1])
    errors = torch.tensor([0.1, 0.2, 0.3, float("nan"), 0.5, 0.6, 0.7])
    assert store.update(flat, errors) == 1  # the NaN error is skipped, the masked pixel ignored
    assert store.fitness[[1, 5]].tolist() == pytest.approx([0.7, 0.6])
    assert store.visits.tolist() == [0, 2, 0, 0, 0, 3, 0, 0]
    assert store.num_measured == 2 and store.epoch_count == 5
    assert store.measured_total == pytest.approx(1.3)
    assert store.epoch_sum == pytest.approx(0.1 + 0.2 + 0.3 + 0.6 + 0.7)
    store.update(torch.tensor([1, 2]), torch.tensor([0.25, 0.5]))
    assert store.num_measured == 3 and store.measured_total == pytest.approx(0.25 + 0.6 + 0.5)
    assert math.isnan(float(store.fitness[7])) and int(store.epoch[7]) == 0


def test_store_costs_4_bytes_per_pixel_and_5_with_selection_counts():
    plain = FitnessStore([(100, 100)] * 3)
    inspected = FitnessStore([(100, 100)] * 3, track_visits=True)
    assert plain.bytes_per_pixel() == 4 and inspected.bytes_per_pixel() == 5
    assert plain.visits is None and inspected.visits.dtype == torch.uint8
    geometry = 8 * (3 * 3 + 4 + plain.num_cameras)  # cameras, heights, widths, offsets, local_of (int64)
    tallies = 8 * 5  # the running sums update keeps on the device (float64)
    assert plain.memory_bytes() == 4 * plain.num_pixels + geometry + tallies
    assert FitnessStore([(10, 10)], dtype=torch.float32).bytes_per_pixel() == 6


def test_stale_errors_are_scaled_by_the_fall_of_the_error_level_per_epoch():
    store = FitnessStore([(1, 4)], dtype=torch.float32)
    store.initialise([torch.rand(1, 4, 3)])
    store.update(torch.tensor([0, 1]), torch.tensor([0.8, 0.4]))  # epoch 1: level 0.6
    store.close_epoch(store.epoch_sum, store.epoch_count)
    for _ in range(5):
        store.update(torch.tensor([2]), torch.tensor([0.06]))  # epoch 2: the level fell 10x
    store.close_epoch(store.epoch_sum, store.epoch_count)
    assert store.current_epoch == 3 and store.epoch.tolist() == [1, 1, 2, 0]
    e = store.corrected_fitness(True, unvisited_prior="mean")
    assert e[2] == torch.tensor(0.06)  # measured in the latest closed epoch: unchanged
    assert e[0] == pytest.approx(0.08) and float(e[0]) / float(e[1]) == pytest.approx(2.0)  # rescaled, order kept
    assert float(e[3]) == pytest.approx(float(e[:3].mean()))  # never visited: the mean of the measured
    assert torch.equal(store.corrected_fitness(False, unvisited_prior="mean")[:3], torch.tensor([0.8, 0.4, 0.06]))


def test_re_measurements_do_not_move_the_error_level():
    store = FitnessStore([(1, 4)], dtype=torch.float32)
    store.update(torch.tensor([0, 1]), torch.tensor([0.2, 0.4]))
    store.update(torch.tensor([2]), torch.tensor([9.0]), trained=False)
    store.close_epoch(store.epoch_sum, store.epoch_count)
    assert store.error_levels[1] == pytest.approx(0.3)
    assert store.epoch[2] == 1  # still stamped with its epoch


def test_epochs_and_visit_counts_saturate_instead_of_wrapping():
    store = FitnessStore([(1, 3)], track_visits=True)
    store.current_epoch = EPOCH_MAX - 1
    for _ in range(3):
        store.close_epoch(1.0, 1.0)
    assert store.current_epoch == EPOCH_MAX
    flat = torch.tensor([0] * 200 + [1])
    store.update(flat, torch.ones(flat.numel()))
    store.update(flat, torch.ones(flat.numel()))  # duplicates within a batch count once each
    assert store.visits.tolist() == [255, 2, 0]
    assert store.epoch.tolist() == [EPOCH_MAX, EPOCH_MAX, 0]


def test_masked_pixels_are_nan_never_sampled_ranked_or_overwritten():
    store = FitnessStore([(4, 4)])
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[:2] = False  # the first 8 pixels are masked out
    store.initialise([torch.rand(4, 4, 3)], masks=[mask])
    assert store.num_valid == 8 and torch.equal(store.valid, mask.reshape(-1))
    assert bool(torch.isnan(store.fitness[:8]).all())
    store.update(torch.arange(16), torch.full((16,), 1e9))  # huge errors clamp to fp16's range
    assert bool(torch.isnan(store.fitness[:8]).all()) and bool(torch.isfinite(store.fitness[8:]).all())
    assert int(store.epoch[:8].sum()) == 0 and store.num_measured == 8
    drawn = store.sample_uniform(400, torch.Generator().manual_seed(0))
    assert bool((drawn >= 8).all())
    pool, _ = rank_pixels(store, 8, "evos", torch.Generator())
    assert sorted(pool.tolist()) == list(range(8, 16))


def test_edge_prior_is_derived_from_the_images_with_mean_one_over_valid_pixels():
    store = FitnessStore([(8, 8), (8, 8)], dtype=torch.float32)
    images = [torch.rand(8, 8, 3, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    mask = torch.ones(8, 8, dtype=torch.bool)
    mask[0] = False
    store.initialise(images, masks=[None, mask])
    edges = store.all_edges()
    assert float(edges[store.valid].mean()) == pytest.approx(1.0, rel=1e-5)
    reference = torch.cat([(laplacian_of_rgb(img) / 255.0).reshape(-1) ** 2 for img in images])
    assert torch.allclose(edges / store.edge_scale, reference, rtol=1e-4, atol=1e-6)
    assert store.images(1) is images[1]  # kept by reference: never copied


def test_shards_agree_on_one_edge_scale():
    images = [torch.rand(6, 6, 3, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    whole = FitnessStore([(6, 6)] * 2)
    whole.initialise(images)
    local_sums = []
    for camera in (0, 1):  # what each rank contributes to the all-reduce
        FitnessStore([(6, 6)], cameras=[camera], num_cameras=2).initialise(
            [images[camera]], reduce_sum=lambda t: local_sums.append(t) or t)
    for camera in (0, 1):  # every rank then receives the sum over both
        shard = FitnessStore([(6, 6)], cameras=[camera], num_cameras=2)
        shard.initialise([images[camera]], reduce_sum=lambda t: local_sums[0] + local_sums[1])
        assert shard.edge_scale == pytest.approx(whole.edge_scale)


def test_crossover_balance_is_in_error_units_and_adapts_to_edges():
    store = FitnessStore([(8, 8)], dtype=torch.float32)
    image = torch.zeros(8, 8, 3)
    image[:, 4:] = 1.0  # one vertical edge
    store.initialise([image])
    edge = store.all_edges() > 0
    errors = torch.where(edge, 1.0, 0.01)  # error concentrated on the edge
    store.update(torch.arange(64), errors)
    pool, balance = rank_pixels(store, 8, "evos", torch.Generator(), "select", stale_correction=False)
    assert balance < 0.5  # p falls below 1/2 exactly when error sits on edges
    assert bool(edge[pool].all())


def test_staleness_control_ranks_longest_untrained_first():
    store = FitnessStore([(1, 5)])
    store.update(torch.tensor([0, 1, 2]), torch.ones(3))  # epoch 1
    store.close_epoch(1.0, 3.0)
    store.close_epoch(0.0, 0.0)
    store.update(torch.tensor([1]), torch.ones(1))  # epoch 3
    pool, _ = rank_pixels(store, 3, "staleness", torch.Generator())
    assert {3, 4} < set(pool.tolist())  # never visited first
    assert 1 not in pool.tolist()  # the most recently trained pixel last


def test_image_that_does_not_match_its_camera_is_named():
    store = FitnessStore([(4, 4), (4, 4)])
    with pytest.raises(ValueError, match="b.png is 5x4 but its camera is 4x4"):
        store.initialise([torch.rand(4, 4, 3), torch.rand(4, 5, 3)], names=["a.png", "b.png"])


def test_an_all_masked_scene_is_refused():
    store = FitnessStore([(2, 2)])
    with pytest.raises(ValueError, match="every training pixel is masked out"):
        store.initialise([torch.rand(2, 2, 3)], masks=[torch.zeros(2, 2)])
    assert math.isnan(float(store.fitness[0]))
