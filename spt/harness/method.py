"""The Method interface the harness drives, and the registry that finds methods by name.

The harness owns everything around the model: reading files, resizing and normalising the image,
building prompts, resizing logits back, metrics, timing and I/O. A method only turns a prepared
image into an opaque per-image ``state`` (once) and a prompt plus that state into low-res logits
(once per prompt), so every prompt mode reuses one encoder pass.

Registry: every module of the :mod:`baselines` package is imported on first lookup and each
:class:`Method` subclass it defines is registered under its ``name`` (adding a baseline touches
one file). Methods living elsewhere (SPT in ``spt.model.method``) are imported from
``EXTRA_METHOD_MODULES`` when present, or register themselves with :func:`register_method`.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from spt.config import SuiteConfig
from spt.config.schema import build, fields
from spt.errors import SuiteError
from spt.harness.prompts import Prompt
from spt.sam import get_spec
from spt.sam.backbones import BackboneSpec

# The package whose every module may define methods (one file per baseline).
METHOD_PACKAGE = "baselines"
# Modules outside it that define methods; skipped while they do not exist yet.
EXTRA_METHOD_MODULES = ("spt.model.method",)
# Keys of methods.<name> that are not the method's own: `train` holds the per-method overrides of
# train.* that `spt train` reads; `spt evaluate` passes the whole section, so methods skip it.
PASSED_THROUGH_PARAMS = frozenset({"train"})


@dataclass(frozen=True)
class MethodConfig:
    """The params of a method that has none: ``methods.<name>`` must be empty.

    A method declares its params as a frozen dataclass subclassing this one (peft's config
    classes are the model), each field an :func:`spt.config.schema.setting` with its type,
    default, range and meaning; the schema checks ``methods.<name>`` against it once.
    """


class Method(ABC):
    """A promptable segmentation method evaluated by the harness.

    Built from ``(backbone, checkpoint, device, params)``: a backbone name from
    :data:`spt.sam.BACKBONES`, a checkpoint path or None (random init, tiny only), a torch device
    and the method's own parameters (a dict, e.g. ``methods.<name>`` of params.yaml).

    Subclasses set ``name`` (unique, the ``--method`` value), ``stages``, the names of the
    outputs :meth:`decode` returns (zero-shot SAM: ``("final",)``; SPT: ``("draft", "final")``),
    and ``config_class``, the dataclass of their params (:class:`MethodConfig`). The checked
    params are ``self.config``; a key the class does not declare, or a value of the wrong type
    or range, is a one-line SuiteError naming ``methods.<name>.<key>``.
    """

    name: ClassVar[str] = ""
    stages: ClassVar[tuple[str, ...]] = ("final",)
    config_class: ClassVar[type[MethodConfig]] = MethodConfig

    def __init__(
        self,
        backbone: str,
        checkpoint: str | Path | None = None,
        device: torch.device | str = "cpu",
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.backbone = backbone
        self.spec: BackboneSpec = get_spec(backbone)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.device = torch.device(device)
        if params is not None and not isinstance(params, Mapping):
            raise SuiteError(
                f"methods.{self.name} must be a mapping of param: value, got "
                f"{type(params).__name__}; fix it in the params file"
            )
        self.params = {
            str(k): v for k, v in (params or {}).items() if k not in PASSED_THROUGH_PARAMS
        }
        self.config = build(self.config_class, self.params, None, self.params_key)

    @property
    def params_key(self) -> str:
        """Where the params come from, for error messages: ``methods.<name>``."""
        return f"methods.{self.name}"

    def torch_modules(self) -> list[torch.nn.Module]:
        """The torch modules holding the method's weights, for the harness to switch kernels on
        (the encoder attention): by default every ``nn.Module`` attribute of the method."""
        return [v for v in vars(self).values() if isinstance(v, torch.nn.Module)]

    @abstractmethod
    def encode(self, image: torch.Tensor) -> Any:
        """Prepared image (1,3,S,S) float32 on ``self.device`` -> opaque per-image state.

        Called once per image; the state is handed back to every :meth:`decode` of that image
        (SPT keeps its relation matrix there too).
        """

    @abstractmethod
    def decode(self, state: Any, prompt: Prompt) -> dict[str, torch.Tensor]:
        """One prompt set -> {stage: low-res logits (N,1,L,L)} for every name in ``stages``.

        N = ``prompt.count``; L = ``self.spec.low_res_size``. Logits, not probabilities.
        """


class TrainableMethod(Method):
    """A method ``spt train`` can train: the training surface the trainer drives.

    Whether a method is trainable is decided here and only here (:func:`is_trainable`): a
    subclass of this class is, any other Method is not. The trainer owns the optimiser, the
    schedule, data order, checkpoints and resume; the method says which module holds its
    weights, which parameters to update, how samples become losses, and what to save.
    """

    @property
    @abstractmethod
    def network(self) -> torch.nn.Module:
        """One module holding all of the method's weights: what the trainer moves to the
        device, wraps in DistributedDataParallel and switches between train and eval mode."""

    def torch_modules(self) -> list[torch.nn.Module]:
        return [self.network]

    @abstractmethod
    def trainable_parameters(self) -> Iterator[torch.nn.Parameter]:
        """The parameters an optimiser should update."""

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    @abstractmethod
    def training_losses(self, samples: Sequence[TrainingSample]) -> dict[str, torch.Tensor]:
        """Losses for one (per-process share of a) batch: named scalar tensors, ``"loss"`` is
        optimised, the others are logged. Every random choice inside must come from
        ``sample.key`` (never a global RNG)."""

    @abstractmethod
    def trained_state(self) -> dict[str, torch.Tensor]:
        """The trained weights to save (only what training changed)."""

    @abstractmethod
    def load_trained_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load weights saved by :meth:`trained_state`."""


def is_trainable(method: Method | type[Method]) -> bool:
    """Whether ``spt train`` can train ``method`` (a :class:`TrainableMethod`, or its class)."""
    cls = method if isinstance(method, type) else type(method)
    return issubclass(cls, TrainableMethod)


def check_trainable(method: Method | type[Method]) -> None:
    """A one-line SuiteError unless :func:`is_trainable`, naming the methods that are."""
    if not is_trainable(method):
        trainable = [n for n in available_methods() if is_trainable(method_class(n))]
        raise SuiteError(
            f"method {method.name!r} is not trainable (zero-shot); train one of "
            f"{', '.join(trainable)}"
        )


@dataclass
class TrainingSample:
    """One augmented training image, built by the trainer from (seed, image id, epoch).

    image:        (1,3,S,S) float32, prepared exactly as for evaluation (resized, normalised)
    image_uint8:  (S,S,3) uint8, the same augmented image before normalisation, for methods that
                  make views of their own (WeSAM's weak/strong views)
    target:       (1,1,S,S) float32 in {0,1}, the augmented ground truth
    prompt:       the training prompt, built from ``target`` like an evaluation prompt
    key:          a 63-bit seed, a pure function of (seed, image id, epoch), for any randomness
                  inside the method (point sampling of the loss, views)
    """

    image_id: str
    image: torch.Tensor
    image_uint8: np.ndarray
    target: torch.Tensor
    prompt: Prompt
    key: int


_REGISTRY: dict[str, type[Method]] = {}
_discovered = False


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` findable by its ``name``."""
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} must set a non-empty `name`")
    known = _REGISTRY.get(cls.name)
    if known is not None and known is not cls:
        raise TypeError(
            f"method name {cls.name!r} is used by both {known.__module__}.{known.__qualname__} "
            f"and {cls.__module__}.{cls.__qualname__}"
        )
    _REGISTRY[cls.name] = cls
    return cls


def _register_module(module) -> None:
    for _, obj in inspect.getmembers(module, inspect.isclass):
        if (
            issubclass(obj, Method)
            and obj.__module__ == module.__name__
            and not inspect.isabstract(obj)
            and obj.name
        ):
            register_method(obj)


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    # by name, as plug-ins: the harness sits below the methods (spt.codegraph's layers)
    package = importlib.import_module(METHOD_PACKAGE)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        _register_module(importlib.import_module(f"{METHOD_PACKAGE}.{info.name}"))
    for name in EXTRA_METHOD_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that module (or its package) is not written yet
            raise
        _register_module(module)
    _discovered = True


def available_methods() -> list[str]:
    """Names of all registered methods, sorted."""
    _discover()
    return sorted(_REGISTRY)


def method_class(name: str) -> type[Method]:
    """The Method subclass registered as ``name``; a SuiteError lists the valid names."""
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SuiteError(
            f"unknown method {name!r}: choose one of {', '.join(sorted(_REGISTRY)) or 'none'}"
        ) from None


def param_names(method: Method | type[Method]) -> tuple[str, ...]:
    """The params keys a method declares (its ``config_class`` fields), in declaration order."""
    return tuple(f.name for f in fields(method.config_class))


def method_params(config: SuiteConfig, name: str) -> dict[str, Any]:
    """``methods.<name>`` of ``config`` (without its ``train`` overrides), once ``name`` and
    every method params.yaml configures are known to be registered: a mistyped
    ``methods.<name>`` would otherwise leave that method on its defaults without a word."""
    method_class(name)
    for configured in config.methods:
        if configured not in _REGISTRY:
            raise SuiteError(
                f"{config.source}: methods.{configured} names no registered method; choose one "
                f"of {', '.join(sorted(_REGISTRY))}; fix the file"
            )
    return config.method_params(name)


def build_method(
    name: str,
    backbone: str,
    checkpoint: str | Path | None = None,
    device: torch.device | str = "cpu",
    params: Mapping[str, Any] | None = None,
) -> Method:
    """Build the method registered as ``name``."""
    return method_class(name)(backbone, checkpoint=checkpoint, device=device, params=params)
