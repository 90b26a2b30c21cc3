"""A VanillaDataManager that loads the training images for the EVOS selector and maps its pixels.

Not ParallelDataManager: its sampler runs in a child process that would never see fitness
updates. Only training batches are EVOS; eval batches stay uniform (nerfstudio's PixelSampler).
What to train on is decided by ``evos_nerf.core.selector.RaySelector`` (``self.selector``, a
submodule with no persistent state, so ``.to(device)`` moves the store but nerfstudio's
``step-N.ckpt`` holds only what upstream puts there); this class does data loading and the
camera <-> pixel index map. The selection state is checkpointed per rank beside nerfstudio's
checkpoints (``evos_nerf.nerfstudio.evos_checkpoint``).

Distributed runs (torchrun, ``evos_nerf.train``): each rank caches and holds the fitness of only
its own images (``evos_nerf.core.sharding``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Tuple, Type, Union

import torch
import tyro
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.pixel_samplers import PixelSampler, PixelSamplerConfig
from nerfstudio.data.utils.dataloaders import CacheDataloader
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.model_components.ray_generators import RayGenerator
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor
from torch.utils.data import Subset

from evos_nerf import distributed
from evos_nerf.core.crossview import PinholeViews
from evos_nerf.core.selector import RaySelector
from evos_nerf.core.sharding import assign_shards
from evos_nerf.core.store import CROSSVIEW_PRIORS, FitnessStore
from evos_nerf.errors import UserInputError
from evos_nerf.nerfstudio.data_checks import check_scene
from evos_nerf.nerfstudio.run_identity import RunIdentity, agreed_run_id
from evos_nerf.nerfstudio.sampler import EvosPixelSampler, EvosPixelSamplerConfig, batch_positions


@dataclass
class EvosDataManagerConfig(VanillaDataManagerConfig):
    _target: Type = field(default_factory=lambda: EvosDataManager)
    pixel_sampler: EvosPixelSamplerConfig = field(default_factory=EvosPixelSamplerConfig)
    """EVOS selection settings (train batches only)."""
    selection_counts: tyro.conf.Suppress[bool] = True
    """Keep per-pixel selection counts (+1 byte per training pixel) for the selection-count maps; the
    trainer sets it from --pipeline.inspection.selection-counts."""

    def validate(self) -> None:
        """One line naming the flag for every setting EVOS cannot train with."""
        if self.train_num_images_to_sample_from != -1:
            raise UserInputError(
                "evos-nerf keeps fitness for every training pixel and needs all images cached: "
                f"set --pipeline.datamanager.train-num-images-to-sample-from -1 (got {self.train_num_images_to_sample_from})"
            )
        if self.patch_size != 1:
            raise UserInputError(f"evos-nerf selects single pixels; --pipeline.datamanager.patch-size must be 1, got {self.patch_size}")
        for flag in ("train_num_rays_per_batch", "eval_num_rays_per_batch"):
            if getattr(self, flag) < 1:
                raise UserInputError(f"--pipeline.datamanager.{flag.replace('_', '-')} must be >= 1, got {getattr(self, flag)}")
        scale = self.camera_res_scale_factor
        if not (math.isfinite(scale) and scale > 0):
            raise UserInputError(f"--pipeline.datamanager.camera-res-scale-factor must be a finite number > 0, got {scale}")
        self.pixel_sampler.validate()


def pinhole_views(cameras: Cameras) -> PinholeViews:
    """The training cameras as the crossview prior projects into them (pinhole; distortion left out)."""
    types = cameras.camera_type.view(-1)
    if bool((types != CameraType.PERSPECTIVE.value).any()):
        raise UserInputError(
            "--pipeline.datamanager.pixel-sampler.unvisited-prior crossview and crossview-pooled need perspective cameras; "
            "use neighbourhood for fisheye or equirectangular captures"
        )
    return PinholeViews(
        cameras.camera_to_worlds.detach().float().cpu(),
        *(getattr(cameras, name).view(-1).float().cpu() for name in ("fx", "fy", "cx", "cy")),
        cameras.height.view(-1).long().cpu(), cameras.width.view(-1).long().cpu(),
    )


class EvosDataManager(RunIdentity, VanillaDataManager):
    config: EvosDataManagerConfig
    train_pixel_sampler: Optional[EvosPixelSampler] = None
    selector: RaySelector

    def __init__(self, config: EvosDataManagerConfig, device: Union[torch.device, str] = "cpu",
                 test_mode: Literal["test", "val", "inference"] = "val", world_size: int = 1, local_rank: int = 0, **kwargs):
        config.validate()
        if test_mode != "inference":
            check_scene(config.dataparser, config.data, ["train", "test" if test_mode == "test" else "val"])
        self.shards: List[List[int]] = []
        """Camera indices held by each rank (one list on a single process)."""
        self.batch_sizes: set = set()
        """Distinct training batch sizes seen (checked by the distributed tests)."""
        self.camera_sizes: List[Tuple[int, int]] = []
        """(H, W) of every training camera: the dataset fingerprint of the EVOS checkpoints."""
        super().__init__(config, device, test_mode, world_size, local_rank, **kwargs)

    def setup_train(self):
        """VanillaDataManager.setup_train, caching only this rank's images, then the selector."""
        cameras = self.train_dataset.cameras
        if len(cameras) == 0:
            raise UserInputError(f"no training images in {self.config.data}: the train split is empty")
        sizes = [(int(h), int(w)) for h, w in zip(cameras.height.view(-1), cameras.width.view(-1))]
        self.camera_sizes = sizes
        rank, world = distributed.get_rank(), distributed.get_world_size()
        self.run_id = agreed_run_id()
        self.shards = assign_shards([h * w for h, w in sizes], world)
        own = self.shards[rank]
        CONSOLE.print("Setting up training dataset...")
        self.train_image_dataloader = CacheDataloader(
            self.train_dataset if world == 1 else Subset(self.train_dataset, own),
            num_images_to_sample_from=self.config.train_num_images_to_sample_from,
            num_times_to_repeat_images=self.config.train_num_times_to_repeat_images,
            device=self.device, num_workers=self.world_size * 4, pin_memory=True,
            collate_fn=self.config.collate_fn, exclude_batch_keys_from_device=self.exclude_batch_keys_from_device,
        )
        self.iter_train_image_dataloader = iter(self.train_image_dataloader)
        self.train_pixel_sampler = self._get_pixel_sampler(self.train_dataset, self.config.train_num_rays_per_batch)
        self.train_ray_generator = RayGenerator(self.train_dataset.cameras.to(self.device))
        cfg = self.config.pixel_sampler
        # Drawn even when the seed is given, so that a selection seed changes which pixels are chosen
        # and nothing else: the trainer's RNG stream (the model's initialisation after this) is the same.
        drawn = int(torch.randint(0, 2**62, (1,)).item())
        seed = cfg.seed + rank if cfg.seed is not None else drawn
        dtype = torch.float16 if cfg.fitness_dtype == "float16" else torch.float32
        store = FitnessStore([sizes[c] for c in own], dtype, cameras=own, num_cameras=len(sizes),
                             track_visits=self.config.selection_counts, track_uniform=cfg.fitness == "learnable")
        generator = torch.Generator(device="cpu").manual_seed(seed)  # train_loop seeded torch per rank
        views = pinhole_views(cameras) if cfg.unvisited_prior in CROSSVIEW_PRIORS else None
        self.selector = RaySelector(cfg, store, self.config.train_num_rays_per_batch, generator, views=views)
        self._initialise_selector()
        self.train_pixel_sampler.attach(self.selector)
        shard = f" (rank {rank}'s shard of {world})" if world > 1 else ""
        size, per_pixel = store.describe()
        CONSOLE.print(f"EVOS fitness store{shard}: {size}, strategy {cfg.strategy}")
        CONSOLE.print(f"EVOS per pixel: {per_pixel}")

    def _initialise_selector(self) -> None:
        """Edge prior and masks from the cached images of this rank's cameras (kept by reference)."""
        batch = self.train_image_dataloader.cached_collated_batch
        order = {int(cam): pos for pos, cam in enumerate(batch["image_idx"].tolist())}
        own = self.selector.store.cameras.tolist()
        images = [batch["image"][order[c]] for c in own]
        masks = None
        if "mask" in batch and not self.config.pixel_sampler.ignore_mask:
            masks = [batch["mask"][order[c]] for c in own]
        names = [str(self.train_dataset.image_filenames[c]) for c in own]
        self.selector.initialise(images, masks, names=names)

    def _get_pixel_sampler(self, dataset, num_rays_per_batch: int) -> PixelSampler:
        if dataset is self.train_dataset:
            return self.config.pixel_sampler.setup(num_rays_per_batch=num_rays_per_batch)
        # Eval batches stay uniform. A fresh config: nerfstudio shares one sampler config otherwise.
        return PixelSamplerConfig().setup(num_rays_per_batch=num_rays_per_batch)

    def next_train(self, step: int) -> Tuple[RayBundle, Dict]:
        """The selector's rays for this step (call ``selector.maybe_evolve(step, ...)`` first)."""
        self.train_count += 1
        batch = self.train_pixel_sampler.sample(next(self.iter_train_image_dataloader))
        self.batch_sizes.add(int(batch["indices"].shape[0]))
        return self.train_ray_generator(batch["indices"]), batch

    def gather_train_pixels(self, indices: Tensor) -> Tensor:
        """Ground-truth RGB(A) of absolute (camera, y, x) training pixels, from the cached images."""
        batch = self.train_image_dataloader.cached_collated_batch
        pos = batch_positions(batch["image_idx"], self.selector.store.num_cameras)[indices[:, 0]]
        if isinstance(batch["image"], list):
            return torch.stack([batch["image"][p][y, x] for p, (_, y, x) in zip(pos.tolist(), indices.tolist())])
        return batch["image"][pos, indices[:, 1], indices[:, 2]]

    def get_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        """The selector's schedules span the run's last step: nerfstudio 1.1.5 trains
        ``max_num_iterations`` *more* steps after a resume (the trainer loads before this call)."""
        trainer = attrs.trainer
        start = int(getattr(trainer, "_start_step", 0)) if trainer is not None else 0
        iterations = int(trainer.config.max_num_iterations) if trainer is not None else self.selector.total_steps
        self.selector.total_steps = max(1, start + iterations)
        return []

    # -- inspection (viewer, loggers) -----------------------------------------------------------
    @property
    def controls(self):
        return self.selector.controls

    @property
    def has_selection_counts(self) -> bool:
        return hasattr(self, "selector") and self.selector.store.track_visits

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # Checkpoints written before the EVOS state moved out of step-N.ckpt hold it under selector.*:
        # it is dropped, the model still loads, and a resume asks for the EVOS folder beside the checkpoint.
        for key in [k for k in state_dict if k.startswith(prefix + "selector.")]:
            del state_dict[key]
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
