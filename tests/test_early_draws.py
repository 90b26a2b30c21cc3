"""The early-draws diagnostic's concentration numbers, on hand-built draws with known answers."""

import math

import torch

from script_modules import load_script


def test_concentration_measures_the_spread_over_images_and_the_busiest_tenth_of_blocks():
    early = load_script("early_draws")
    # 4 rays on image 0, none on image 1, 2 on image 2: counts 4, 0, 2 (mean 2, sample sd 2)
    cyx = torch.tensor([[0, 0, 0], [0, 1, 1], [0, 2, 2], [0, 3, 3], [2, 0, 0], [2, 0, 1]])
    spread, _ = early.concentration(cyx, num_cameras=3, block=16)
    assert math.isclose(spread, 1.0)
    # ten 16 px blocks of one image drawn: one of them 10 times, the nine others once each
    rays = [[0, 0, 0]] * 10 + [[0, 0, 16 * k] for k in range(1, 10)]
    _, busiest = early.concentration(torch.tensor(rays), num_cameras=1, block=16)
    assert math.isclose(busiest, 10 / 19)
    # evenly spread: the busiest tenth holds a tenth
    even = torch.tensor([[0, 16 * (k // 10), 16 * (k % 10)] for k in range(100)])
    spread, busiest = early.concentration(even, num_cameras=1, block=16)
    assert math.isclose(busiest, 0.1) and spread == 0.0  # one image: nothing to spread over


def test_per_image_rows_give_each_strategys_rays_as_a_multiple_of_the_first_ones():
    early = load_script("early_draws")
    counts = {"uniform": torch.tensor([10, 10, 0]), "evos": torch.tensor([5, 20, 3])}
    assert early.per_image_rows(counts, ["a.jpg", "b.jpg", "c.jpg"]) == [
        ["a.jpg", "10", "0.50"], ["b.jpg", "10", "2.00"], ["c.jpg", "0", "-"]]
