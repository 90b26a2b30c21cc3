"""A VanillaDataManager that owns the EVOS fitness store and drives its key iterations.

Not ParallelDataManager: its sampler runs in a child process that would never see fitness
updates. Only training batches are EVOS; eval batches stay uniform (nerfstudio's PixelSampler).
The store is a submodule, so ``pipeline.state_dict()`` (and therefore every checkpoint) carries
the per-pixel fitness, and the selection RNG and schedule position ride along as extra state.

Distributed runs (torchrun, ``evos_nerf.train``): each rank caches and holds the fitness of only
its own images (``evos_nerf.core.sharding``). Checkpoints always carry the *global* store: the
shards are gathered to rank 0 before a save and sliced out again on load, so a run can resume on
any number of ranks.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Literal, Optional, Tuple, Type, Union

import torch
from nerfstudio.data.utils.dataloaders import CacheDataloader
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.model_components.ray_generators import RayGenerator
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.pixel_samplers import PixelSampler, PixelSamplerConfig
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.utils import writer
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor
from torch.utils.data import Subset

from evos_nerf import distributed
from evos_nerf.core.fitness_stats import FitnessSummary, summarise
from evos_nerf.core.schedules import check_ratio, is_key_iteration, key_interval
from evos_nerf.core.sharding import assign_shards, mutation_scale
from evos_nerf.core.store import FitnessStore, key_pool_size, pixel_offsets
from evos_nerf.nerfstudio.data_checks import check_scene
from evos_nerf.nerfstudio.sampler import EvosPixelSampler, EvosPixelSamplerConfig, batch_positions

MeasureFn = Callable[[Tensor], Tensor]
"""[R, 3] absolute (camera, y, x) -> [R] per-ray squared error, measured without gradients."""


@dataclass
class EvosDataManagerConfig(VanillaDataManagerConfig):
    _target: Type = field(default_factory=lambda: EvosDataManager)
    pixel_sampler: EvosPixelSamplerConfig = field(default_factory=EvosPixelSamplerConfig)
    """EVOS selection settings (train batches only)."""


@dataclass
class EvosControls:
    """Settings a user may change while training (the viewer's EVOS panel). They take effect on
    the next step; distributed runs broadcast rank 0's values every step."""

    selection_ratio: float
    mutation_ratio: float
    paused: bool = False
    """Fall back to uniform sampling (fitness is still recorded)."""

    def to_tensor(self) -> Tensor:
        return torch.tensor([self.selection_ratio, self.mutation_ratio, float(self.paused)], dtype=torch.float64)

    def load_tensor(self, t: Tensor) -> None:
        self.selection_ratio, self.mutation_ratio, self.paused = float(t[0]), float(t[1]), bool(t[2] > 0.5)


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
        sampler_cfg = config.pixel_sampler
        self.controls = EvosControls(sampler_cfg.selection_ratio, sampler_cfg.mutation_ratio)
        self._pool_ratio: Optional[float] = None
        """Selection ratio the current pool was built with (a changed control forces a re-rank)."""
        self.statistics: Dict[str, float] = {}
        """Read-outs for the viewer and loggers, refreshed at key iterations (over all ranks)."""
        self.fitness_histogram: Optional[Tuple[Tensor, Tensor]] = None
        """(counts, fitness bin edges) from the last key iteration, over all ranks."""
        self.shards: List[List[int]] = []
        """Camera indices held by each rank (one list on a single process)."""
        self.batch_sizes: set = set()
        """Distinct training batch sizes seen (checked by the distributed tests)."""
        self._checkpoint_state: Optional[Dict[str, Any]] = None
        super().__init__(config, device, test_mode, world_size, local_rank, **kwargs)
        self._register_state_dict_hook(_emit_global_store)

    # -- setup --------------------------------------------------------------------------------
    def setup_train(self):
        cameras = self.train_dataset.cameras
        if len(cameras) == 0:
            raise ValueError(f"no training images in {self.config.data}: the train split is empty")
        sizes = [(int(h), int(w)) for h, w in zip(cameras.height.view(-1), cameras.width.view(-1))]
        self.global_widths = torch.tensor([w for _, w in sizes], dtype=torch.long)
        self.global_offsets = pixel_offsets(torch.tensor([h * w for h, w in sizes], dtype=torch.long))
        rank, world = distributed.get_rank(), distributed.get_world_size()
        self.shards = assign_shards([h * w for h, w in sizes], world)
        own = self.shards[rank]
        dtype = torch.float16 if self.config.pixel_sampler.fitness_dtype == "float16" else torch.float32
        self.fitness_store = FitnessStore([sizes[c] for c in own], dtype, cameras=own, num_cameras=len(sizes))
        # VanillaDataManager.setup_train, but caching only this rank's images.
        CONSOLE.print("Setting up training dataset...")
        dataset = self.train_dataset if world == 1 else Subset(self.train_dataset, own)
        self.train_image_dataloader = CacheDataloader(
            dataset,
            num_images_to_sample_from=self.config.train_num_images_to_sample_from,
            num_times_to_repeat_images=self.config.train_num_times_to_repeat_images,
            device=self.device,
            num_workers=self.world_size * 4,
            pin_memory=True,
            collate_fn=self.config.collate_fn,
            exclude_batch_keys_from_device=self.exclude_batch_keys_from_device,
        )
        self.iter_train_image_dataloader = iter(self.train_image_dataloader)
        self.train_pixel_sampler = self._get_pixel_sampler(self.train_dataset, self.config.train_num_rays_per_batch)
        self.train_ray_generator = RayGenerator(self.train_dataset.cameras.to(self.device))
        seed = self.config.pixel_sampler.seed
        if seed is None:  # train_loop has seeded torch with machine.seed + rank
            seed = int(torch.randint(0, 2**62, (1,)).item())
        else:
            seed += rank
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.train_pixel_sampler.attach(self.fitness_store, self.generator, self.controls)
        store = self.fitness_store
        shard = f" (rank {rank}'s shard of {world})" if world > 1 else ""
        CONSOLE.print(
            f"EVOS fitness store{shard}: {store.num_images} images, {store.num_pixels:,} pixels, "
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
        own = store.cameras.tolist()
        if any(c not in order for c in own):
            raise RuntimeError("EVOS needs every training image of its shard in the image batch")
        images = [image_batch["image"][order[c]] for c in own]
        masks = None
        if "mask" in image_batch:
            masks = [image_batch["mask"][order[c]] for c in own]
        names = [str(self.train_dataset.image_filenames[c]) for c in own]
        store.initialise(images, masks, names=names, reduce_sum=distributed.all_reduce_sum)
        self._refresh_mutation_scale()
        self._refresh_statistics()

    # -- training -----------------------------------------------------------------------------
    def begin_step(self, step: int) -> None:
        """Per-step bookkeeping on every rank: agree on the controls, advance the read-outs."""
        if distributed.is_distributed():
            self.controls.load_tensor(distributed.broadcast(self.controls.to_tensor()))
        check_ratio("EVOS selection ratio", self.controls.selection_ratio)
        check_ratio("EVOS mutation ratio", self.controls.mutation_ratio, allow_zero=True)
        if self.statistics:
            self.statistics["steps_since_key"] = float(step - self.last_key_step)

    def next_train(self, step: int) -> Tuple[RayBundle, Dict]:
        self.train_count += 1
        image_batch = next(self.iter_train_image_dataloader)
        self._ensure_initialised(image_batch)
        start = time.perf_counter()
        batch = self.train_pixel_sampler.sample(image_batch)
        self.selection_seconds += time.perf_counter() - start
        self.batch_sizes.add(int(batch["indices"].shape[0]))
        ray_bundle = self.train_ray_generator(batch["indices"])
        return ray_bundle, batch

    def is_key_iteration(self, step: int) -> bool:
        """On the schedule, or the user changed the selection ratio (same answer on every rank)."""
        cfg = self.config.pixel_sampler
        if cfg.ranking is not None and self._pool_ratio is not None and self._pool_ratio != self.controls.selection_ratio:
            return True
        # nerfstudio counts from 0; EVOS's rule t mod I(t) == 1 counts from 1.
        return is_key_iteration(step + 1, self.total_steps, cfg.key_schedule, cfg.init_interval, cfg.end_interval)

    def key_iteration(self, step: int, measure: Optional[MeasureFn]) -> None:
        """Re-measure the stalest pool members, then rank every pixel into a new candidate pool."""
        cfg = self.config.pixel_sampler
        store = self.fitness_store
        if cfg.ranking is None:  # uniform baseline: only the read-outs
            self.last_key_step = step
            self._refresh_statistics()
            return
        measured = distributed.all_reduce_sum(torch.tensor([float((store.last_step >= 0).sum())], dtype=torch.float64))
        if cfg.ranking in ("evos", "topk") and float(measured[0]) == 0:
            return  # nothing measured yet: keep sampling uniformly until the next key iteration
        if measure is not None and cfg.refresh_budget > 0 and cfg.ranking in ("evos", "topk"):
            start = time.perf_counter()
            stale = store.stalest_in_pool(step, cfg.refresh_budget)
            if stale.numel():
                errors = measure(store.unflatten(stale).cpu())
                self._warn_skipped(store.update(stale, errors, step, trained=False), step, "re-measured")
            self.refresh_seconds += time.perf_counter() - start
        start = time.perf_counter()
        num_valid = int(store.valid.sum())
        ratio = self.controls.selection_ratio
        store.rank(
            key_pool_size(num_valid, ratio),
            cfg.ranking,
            cfg.crossover,
            cfg.stale_correction,
            step,
            self.generator,
            reduce_sum=distributed.all_reduce_sum,
            unvisited_prior=cfg.unvisited_prior,
            prior_block=cfg.prior_block,
        )
        self._pool_ratio = ratio
        self.last_key_step = step
        self._refresh_mutation_scale()
        self.selection_seconds += time.perf_counter() - start
        self._refresh_statistics()
        self._log_key_iteration(step)

    def _refresh_mutation_scale(self) -> None:
        """Size this rank's mutant share by its part of all unselected pixels (see core.sharding)."""
        store = self.fitness_store
        total = distributed.all_reduce_sum(torch.tensor([float(store.num_unselected)], dtype=torch.float64))
        self.train_pixel_sampler.mutation_scale = mutation_scale(
            store.num_unselected, int(total[0]), distributed.get_world_size()
        )

    def _refresh_statistics(self) -> FitnessSummary:
        """Read-outs over all ranks (a collective: runs at key iterations, on every rank)."""
        cfg = self.config.pixel_sampler
        summary = summarise(self.fitness_store, distributed.all_reduce_sum)
        step = max(self.last_key_step, 0)
        self.statistics = {
            "key_interval": float(key_interval(step + 1, self.total_steps, cfg.key_schedule, cfg.init_interval, cfg.end_interval)),
            "steps_since_key": 0.0,
            "last_key_step": float(self.last_key_step),
            **summary.scalars(),
        }
        self.fitness_histogram = (summary.counts, summary.bin_edges)
        return summary

    def _log_key_iteration(self, step: int) -> None:
        """Scalars for tensorboard / wandb (no-ops without a writer or off rank 0)."""
        store = self.fitness_store
        stats = self.statistics
        writer.put_scalar("EVOS/never_visited_share", stats["never_visited_share"], step)
        writer.put_scalar("EVOS/crossover_balance_p", store.last_balance, step)
        writer.put_scalar("EVOS/mean_fitness", stats["fitness_mean"], step)
        writer.put_scalar("EVOS/p99_fitness", stats["fitness_p99"], step)
        if store.pool is not None and store.pool.numel():
            writer.put_scalar("EVOS/pool_mean_fitness", float(store.fitness[store.pool].float().mean()), step)

    # -- inspection (viewer, loggers) -----------------------------------------------------------
    def owns_camera(self, camera: int) -> bool:
        """Whether this rank holds the camera's fitness (always, on one process)."""
        return self.fitness_store.owns(camera)

    def fitness_map(self, camera: int) -> Tensor:
        """[H, W] cached error of one training camera (0 where never visited)."""
        store = self.fitness_store
        fitness = store.image_view(store.fitness, camera).float()
        visited = store.image_view(store.last_step, camera) >= 0
        return torch.where(visited, fitness, torch.zeros_like(fitness)).cpu()

    def selection_count_map(self, camera: int) -> Tensor:
        """[H, W] how often each pixel of one training camera was trained."""
        store = self.fitness_store
        return store.image_view(store.visits, camera).float().cpu()

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
        pos = batch_positions(image_batch["image_idx"], self.fitness_store.num_cameras)[indices[:, 0]]
        if isinstance(images, list):
            return torch.stack([images[p][y, x] for p, (_, y, x) in zip(pos.tolist(), indices.tolist())])
        return images[pos, indices[:, 1], indices[:, 2]]

    def get_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        self.total_steps = max(1, int(attrs.trainer.config.max_num_iterations))
        return []

    # -- checkpoint state ---------------------------------------------------------------------
    def get_extra_state(self) -> Dict[str, Any]:
        gathered = self._checkpoint_state
        generators = gathered["generators"] if gathered else [self._generator_state()]
        return {
            "generators": generators,
            "world_size": len(generators),
            "last_key_step": self.last_key_step,
            "strategy": self.config.pixel_sampler.strategy,
            "controls": self.controls.to_tensor(),
        }

    def _generator_state(self) -> Optional[Tensor]:
        return None if self.generator is None else self.generator.get_state()

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        generators = state.get("generators", [state.get("generator")])
        rank, world = distributed.get_rank(), distributed.get_world_size()
        if len(generators) != world:
            CONSOLE.print(
                f"[yellow]EVOS: checkpoint was written by {len(generators)} rank(s), resuming on {world}: "
                "the fitness store is re-sharded exactly; selection RNG streams restart per rank[/yellow]"
            )
        if rank < len(generators) and generators[rank] is not None and self.generator is not None:
            self.generator.set_state(generators[rank])
        self.last_key_step = int(state.get("last_key_step", -1))
        if state.get("controls") is not None:
            self.controls.load_tensor(state["controls"])
            self._pool_ratio = self.controls.selection_ratio

    @contextmanager
    def gathered_for_checkpoint(self) -> Iterator[None]:
        """Collective: gather every rank's shard so that rank 0's state dict holds the global store.

        Call on every rank around a save; a no-op on one process (the store is already global).
        """
        if not distributed.is_distributed():
            yield
            return
        self._checkpoint_state = gather_global_store(self)
        try:
            yield
        finally:
            self._checkpoint_state = None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        if hasattr(self, "fitness_store") and prefix + "fitness_store.fitness" in state_dict:
            check_global_store(state_dict, prefix + "fitness_store.", self.global_offsets)
            shard_state_dict(state_dict, prefix + "fitness_store.", self.fitness_store, self.global_offsets, self.global_widths)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)


# -- global <-> shard conversion of the store's checkpoint entries ---------------------------------
_PIXEL_BUFFERS = ("fitness", "last_step", "edges", "valid", "visits")


def gather_global_store(dm: EvosDataManager) -> Optional[Dict[str, Any]]:
    """Every rank's shard, reassembled in global pixel order on rank 0 (None on other ranks)."""
    store = dm.fitness_store
    owned = distributed.gather_to_main(store.cameras.cpu())
    parts = {name: distributed.gather_to_main(getattr(store, name).cpu()) for name in _PIXEL_BUFFERS}
    pool = store.pool if store.pool is not None else torch.empty(0, dtype=torch.long)
    pools = distributed.gather_to_main(store.to_global_flat(pool, dm.global_offsets, dm.global_widths).cpu())
    generators = distributed.gather_objects_to_main(dm._generator_state())
    if owned is None:
        return None
    offsets = dm.global_offsets
    cameras = torch.cat(owned)
    if sorted(cameras.tolist()) != list(range(offsets.numel() - 1)):
        raise RuntimeError(f"EVOS shards are not a partition of the training cameras: {[o.tolist() for o in owned]}")
    out: Dict[str, Any] = {}
    for name, per_rank in parts.items():
        full = torch.empty(int(offsets[-1]), dtype=per_rank[0].dtype)
        for cams, values in zip(owned, per_rank):
            at = 0
            for c in cams.tolist():
                n = int(offsets[c + 1] - offsets[c])
                full[offsets[c] : offsets[c + 1]] = values[at : at + n]
                at += n
        out[name] = full
    heights = (offsets[1:] - offsets[:-1]) // dm.global_widths
    out.update(heights=heights, widths=dm.global_widths.clone(), offsets=offsets.clone(),
               cameras=torch.arange(offsets.numel() - 1), initialised=store.initialised.cpu().clone())
    extra = store.get_extra_state()
    extra["pool"] = torch.cat(pools) if store.pool is not None else None
    out["_extra_state"] = extra
    out["generators"] = generators
    return out


def _emit_global_store(module: EvosDataManager, state_dict: Dict[str, Any], prefix: str, local_metadata) -> None:
    """State-dict hook: while a checkpoint is being written, replace the shard with the global store."""
    gathered = module._checkpoint_state
    if not gathered:
        return
    for name, value in gathered.items():
        if name != "generators":
            state_dict[prefix + "fitness_store." + name] = value


def check_global_store(state_dict: Dict[str, Any], prefix: str, offsets: Tensor) -> None:
    """Clear errors for a checkpoint whose store does not match this dataset."""
    saved = state_dict[prefix + "fitness"].numel()
    here = int(offsets[-1])
    if saved != here:
        raise ValueError(
            f"checkpoint's EVOS fitness store covers {saved:,} pixels but this dataset's training "
            f"images have {here:,}: was it trained on another dataset or split?"
        )
    saved_offsets = state_dict.get(prefix + "offsets")
    if saved_offsets is None or saved_offsets.numel() != offsets.numel() or not torch.equal(saved_offsets.cpu(), offsets):
        raise ValueError(
            "checkpoint's EVOS fitness store is not a complete global store for this dataset's "
            "training images (a shard, or images of other sizes); it cannot be resumed here"
        )


def shard_state_dict(state_dict: Dict[str, Any], prefix: str, store: FitnessStore, offsets: Tensor, widths: Tensor) -> None:
    """Rewrite global store entries in place into this store's shard (identity on one process)."""
    own = store.cameras.cpu().tolist()
    if own == list(range(offsets.numel() - 1)):
        return
    for name in _PIXEL_BUFFERS:
        key = prefix + name
        if key in state_dict:
            full = state_dict[key]
            state_dict[key] = torch.cat([full[offsets[c] : offsets[c + 1]] for c in own])
    for name in ("heights", "widths", "cameras"):
        key = prefix + name
        if key in state_dict:
            state_dict[key] = state_dict[key][own] if name != "cameras" else torch.tensor(own)
    key = prefix + "offsets"
    if key in state_dict:
        state_dict[key] = pixel_offsets((offsets[1:] - offsets[:-1])[own])
    extra_key = prefix + "_extra_state"
    if extra_key in state_dict and state_dict[extra_key].get("pool") is not None:
        extra = dict(state_dict[extra_key])
        extra["pool"] = store.from_global_flat(extra["pool"], offsets, widths).cpu()
        state_dict[extra_key] = extra
