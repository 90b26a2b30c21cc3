"""A VanillaDataManager that owns the EVOS fitness store and drives its key iterations.

Not ParallelDataManager: its sampler runs in a child process that would never see fitness
updates. Only training batches are EVOS; eval batches stay uniform (nerfstudio's PixelSampler).
The store is a submodule, so ``pipeline.state_dict()`` (and therefore every checkpoint) carries
the per-pixel fitness, and the selection RNG and schedule position ride along as extra state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Literal, Optional, Tuple, Type, Union

import torch
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.pixel_samplers import PixelSampler, PixelSamplerConfig
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.utils import writer
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor

from evos_nerf.core.schedules import is_key_iteration
from evos_nerf.core.store import FitnessStore, key_pool_size
from evos_nerf.nerfstudio.data_checks import check_scene
from evos_nerf.nerfstudio.sampler import EvosPixelSampler, EvosPixelSamplerConfig, batch_positions

MeasureFn = Callable[[Tensor], Tensor]
"""[R, 3] absolute (camera, y, x) -> [R] per-ray squared error, measured without gradients."""


@dataclass
class EvosDataManagerConfig(VanillaDataManagerConfig):
    _target: Type = field(default_factory=lambda: EvosDataManager)
    pixel_sampler: EvosPixelSamplerConfig = field(default_factory=EvosPixelSamplerConfig)
    """EVOS selection settings (train batches only)."""


class EvosDataManager(VanillaDataManager):
    config: EvosDataManagerConfig
    train_pixel_sampler: Optional[EvosPixelSampler] = None

    def __init__(
        self,
        config: EvosDataManagerConfig,
        device: Union[torch.device, str] = "cpu",
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        **kwargs,
    ):
        if config.train_num_images_to_sample_from != -1:
            raise ValueError(
                "evos-nerf keeps fitness for every training pixel and needs all images cached: "
                f"set --pipeline.datamanager.train-num-images-to-sample-from -1 (got {config.train_num_images_to_sample_from})"
            )
        if config.patch_size != 1:
            raise ValueError(f"evos-nerf selects single pixels; --pipeline.datamanager.patch-size must be 1, got {config.patch_size}")
        if test_mode != "inference":
            check_scene(config.dataparser, config.data, ["train", "test" if test_mode == "test" else "val"])
        self.total_steps = 30000
        self.last_key_step = -1
        self.selection_seconds = 0.0
        """Time spent choosing pixels, writing fitness back and ranking (the sampler's overhead)."""
        self.refresh_seconds = 0.0
        """Time spent re-measuring stale pixels at key iterations (extra forward passes)."""
        self.generator: Optional[torch.Generator] = None
        super().__init__(config, device, test_mode, world_size, local_rank, **kwargs)

    # -- setup --------------------------------------------------------------------------------
    def setup_train(self):
        cameras = self.train_dataset.cameras
        if len(cameras) == 0:
            raise ValueError(f"no training images in {self.config.data}: the train split is empty")
        sizes = [(int(h), int(w)) for h, w in zip(cameras.height.view(-1), cameras.width.view(-1))]
        dtype = torch.float16 if self.config.pixel_sampler.fitness_dtype == "float16" else torch.float32
        self.fitness_store = FitnessStore(sizes, dtype)
        super().setup_train()
        seed = self.config.pixel_sampler.seed
        if seed is None:  # train_loop has seeded torch with machine.seed + rank
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.train_pixel_sampler.attach(self.fitness_store, self.generator)
        store = self.fitness_store
        CONSOLE.print(
            f"EVOS fitness store: {store.num_images} images, {store.num_pixels:,} pixels, "
            f"{store.memory_bytes() / 2**20:.1f} MiB ({self.config.pixel_sampler.fitness_dtype} fitness), "
            f"strategy {self.config.pixel_sampler.strategy}"
        )

    def _get_pixel_sampler(self, dataset, num_rays_per_batch: int) -> PixelSampler:
        if dataset is self.train_dataset:
            return self.config.pixel_sampler.setup(num_rays_per_batch=num_rays_per_batch)
        # Eval batches stay uniform. A fresh config: nerfstudio shares one sampler config otherwise.
        return PixelSamplerConfig().setup(num_rays_per_batch=num_rays_per_batch)

    def _ensure_initialised(self, image_batch: Dict[str, Any]) -> None:
        """Edge prior and masks from the cached training images, once (a resumed store is kept)."""
        store = self.fitness_store
        if bool(store.initialised):
            return
        order = {int(cam): pos for pos, cam in enumerate(image_batch["image_idx"].tolist())}
        if len(order) != store.num_images:
            raise RuntimeError("EVOS needs every training image in the image batch")
        images = [image_batch["image"][order[c]] for c in range(store.num_images)]
        masks = None
        if "mask" in image_batch:
            masks = [image_batch["mask"][order[c]] for c in range(store.num_images)]
        store.initialise(images, masks, names=[str(n) for n in self.train_dataset.image_filenames])

    # -- training -----------------------------------------------------------------------------
    def next_train(self, step: int) -> Tuple[RayBundle, Dict]:
        self.train_count += 1
        image_batch = next(self.iter_train_image_dataloader)
        self._ensure_initialised(image_batch)
        start = time.perf_counter()
        batch = self.train_pixel_sampler.sample(image_batch)
        self.selection_seconds += time.perf_counter() - start
        ray_bundle = self.train_ray_generator(batch["indices"])
        return ray_bundle, batch

    def is_key_iteration(self, step: int) -> bool:
        cfg = self.config.pixel_sampler
        if cfg.ranking is None:
            return False
        # nerfstudio counts from 0; EVOS's rule t mod I(t) == 1 counts from 1.
        return is_key_iteration(step + 1, self.total_steps, cfg.key_schedule, cfg.init_interval, cfg.end_interval)

    def key_iteration(self, step: int, measure: Optional[MeasureFn]) -> None:
        """Re-measure the stalest pool members, then rank every pixel into a new candidate pool."""
        cfg = self.config.pixel_sampler
        store = self.fitness_store
        if cfg.ranking in ("evos", "topk") and not bool((store.last_step >= 0).any()):
            return  # nothing measured yet: keep sampling uniformly until the next key iteration
        if measure is not None and cfg.refresh_budget > 0 and cfg.ranking in ("evos", "topk"):
            start = time.perf_counter()
            stale = store.stalest_in_pool(step, cfg.refresh_budget)
            if stale.numel():
                errors = measure(store.unflatten(stale).cpu())
                self._warn_skipped(store.update(stale, errors, step), step, "re-measured")
            self.refresh_seconds += time.perf_counter() - start
        start = time.perf_counter()
        num_valid = int(store.valid.sum())
        store.rank(
            key_pool_size(num_valid, cfg.selection_ratio),
            cfg.ranking,
            cfg.crossover,
            cfg.stale_correction,
            step,
            self.generator,
        )
        self.last_key_step = step
        self.selection_seconds += time.perf_counter() - start
        self._log_key_iteration(step)

    def _log_key_iteration(self, step: int) -> None:
        """Scalars for tensorboard / wandb (no-ops without a writer or off rank 0)."""
        store = self.fitness_store
        visited = (store.last_step >= 0) & store.valid
        writer.put_scalar("EVOS/never_visited_share", 1.0 - float(visited.sum()) / max(1, int(store.valid.sum())), step)
        writer.put_scalar("EVOS/crossover_balance_p", store.last_balance, step)
        if bool(visited.any()):
            writer.put_scalar("EVOS/mean_fitness", float(store.fitness[visited].float().mean()), step)
        if store.pool is not None and store.pool.numel():
            writer.put_scalar("EVOS/pool_mean_fitness", float(store.fitness[store.pool].float().mean()), step)

    def update_fitness(self, indices: Tensor, errors: Tensor, step: int) -> None:
        """Feed back the per-ray errors of the rays just trained (absolute camera, y, x)."""
        start = time.perf_counter()
        store = self.fitness_store
        flat = store.flat_index(indices[:, 0], indices[:, 1], indices[:, 2])
        self._warn_skipped(store.update(flat, errors, step), step, "trained")
        self.selection_seconds += time.perf_counter() - start

    @staticmethod
    def _warn_skipped(skipped: int, step: int, what: str) -> None:
        if skipped:
            CONSOLE.print(
                f"[yellow]EVOS: step {step}: {skipped} {what} rays had a NaN/inf error; "
                "their fitness was left unchanged[/yellow]"
            )

    def gather_train_pixels(self, indices: Tensor) -> Tensor:
        """Ground-truth RGB(A) of absolute (camera, y, x) training pixels, from the cached images."""
        image_batch = self.train_image_dataloader.cached_collated_batch
        images = image_batch["image"]
        pos = batch_positions(image_batch["image_idx"], self.fitness_store.num_images)[indices[:, 0]]
        if isinstance(images, list):
            return torch.stack([images[p][y, x] for p, (_, y, x) in zip(pos.tolist(), indices.tolist())])
        return images[pos, indices[:, 1], indices[:, 2]]

    def get_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        self.total_steps = max(1, int(attrs.trainer.config.max_num_iterations))
        return []

    # -- checkpoint state ---------------------------------------------------------------------
    def get_extra_state(self) -> Dict[str, Any]:
        return {
            "generator": None if self.generator is None else self.generator.get_state(),
            "last_key_step": self.last_key_step,
            "strategy": self.config.pixel_sampler.strategy,
        }

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        if state.get("generator") is not None and self.generator is not None:
            self.generator.set_state(state["generator"])
        self.last_key_step = int(state.get("last_key_step", -1))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        key = prefix + "fitness_store.fitness"
        if key in state_dict and hasattr(self, "fitness_store"):
            saved, here = state_dict[key].numel(), self.fitness_store.num_pixels
            if saved != here:
                raise ValueError(
                    f"checkpoint's EVOS fitness store covers {saved:,} pixels but this dataset's training "
                    f"images have {here:,}: was it trained on another dataset or split?"
                )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

