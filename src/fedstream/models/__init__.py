"""Reference models, built deterministically from a seed without touching torch's global RNG.

Every builder takes (in_features, out_features, hidden) and returns an ``nn.Module`` whose
input is a batch of flat feature rows (n, in_features) and whose output is (n, out_features):
logits for classification, the prediction for regression.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import torch
from torch import nn

from fedstream import checks
from fedstream.errors import ConfigError

ModelBuilder = Callable[[int, int, Sequence[int] | None], nn.Module]


def mlp(in_features: int, out_features: int, hidden: Sequence[int] | None = None) -> nn.Module:
    """Fully connected ReLU network: in → hidden… → out (logits). Default hidden (64, 64)."""
    layers: list[nn.Module] = []
    width = in_features
    for size in (64, 64) if hidden is None else hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def mlp_bn(in_features: int, out_features: int, hidden: Sequence[int] | None = None) -> nn.Module:
    """The MLP with batch normalisation after each hidden layer: in → (Linear, BatchNorm1d,
    ReLU)… → out. Default hidden (64, 64). FedBN (``model.local_batchnorm``) keeps its
    BatchNorm layers on each client; the output layer's entries are ``6.*`` by default."""
    layers: list[nn.Module] = []
    width = in_features
    for size in (64, 64) if hidden is None else hidden:
        layers += [nn.Linear(width, size), nn.BatchNorm1d(size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def linear(in_features: int, out_features: int, hidden: Sequence[int] | None = None) -> nn.Module:
    """One affine layer: linear regression (MSE) or logistic / softmax regression
    (cross-entropy on its logits)."""
    return nn.Sequential(nn.Linear(in_features, out_features))


class DigitsCNN(nn.Module):
    """A small CNN for 8×8 images given as 64 flat pixels: two 3×3 conv layers (16, 32
    channels, ReLU, 2×2 max-pool) and a linear classifier on the 2×2×32 map. With
    ``batch_norm`` each conv is followed by ``BatchNorm2d``; with ``dropout`` > 0 the
    flattened map passes through ``Dropout(dropout)`` before the classifier."""

    def __init__(
        self,
        out_features: int,
        channels: Sequence[int] = (16, 32),
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 1
        for size in channels:
            layers.append(nn.Conv2d(width, size, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(size))
            layers += [nn.ReLU(), nn.MaxPool2d(2)]
            width = size
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(width * 2 * 2, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.features(x.reshape(-1, 1, 8, 8))
        logits: torch.Tensor = self.classifier(self.dropout(maps.flatten(1)))
        return logits


def _cnn_channels(in_features: int, hidden: Sequence[int] | None) -> tuple[int, ...]:
    if in_features != 64:
        raise ConfigError("model", "cnn", "a data set of 8×8 images (64 features), such as digits")
    channels = (16, 32) if hidden is None else tuple(hidden)
    if len(channels) != 2:
        raise ConfigError("hidden", channels, "two channel counts for the cnn, such as 16,32")
    return channels


def cnn(in_features: int, out_features: int, hidden: Sequence[int] | None = None) -> nn.Module:
    """:class:`DigitsCNN`; ``hidden`` gives its two channel counts (default 16, 32)."""
    return DigitsCNN(out_features, _cnn_channels(in_features, hidden))


def cnn_bn(in_features: int, out_features: int, hidden: Sequence[int] | None = None) -> nn.Module:
    """:class:`DigitsCNN` with batch norm after each conv and dropout 0.25 before the
    classifier: the layers that hold state and draw randomness in training, as most image
    models have them (the W4 workload of ``benchmarks/perf``)."""
    return DigitsCNN(out_features, _cnn_channels(in_features, hidden), True, 0.25)


class CharLSTM(nn.Module):
    """LEAF's Shakespeare model: an embedding of 8 per character, stacked LSTM layers (256
    and 256 in LEAF), and a linear layer on the last step's output giving next-character
    logits. Input: (n, sequence) character codes of any integer dtype."""

    def __init__(self, vocabulary: int, hidden: Sequence[int] = (256, 256), embedding: int = 8):
        super().__init__()
        sizes = tuple(hidden)
        if len(set(sizes)) != 1:
            raise ConfigError("hidden", sizes, "equal LSTM layer widths, such as 256,256")
        self.embedding = nn.Embedding(vocabulary, embedding)
        self.lstm = nn.LSTM(embedding, sizes[0], num_layers=len(sizes), batch_first=True)
        self.decoder = nn.Linear(sizes[0], vocabulary)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.lstm(self.embedding(x.long()))
        logits: torch.Tensor = self.decoder(outputs[:, -1, :])
        return logits


def char_lstm(
    in_features: int, out_features: int, hidden: Sequence[int] | None = None
) -> nn.Module:
    """:class:`CharLSTM` over a vocabulary of ``out_features`` characters."""
    return CharLSTM(out_features, (256, 256) if hidden is None else hidden)


MODELS: dict[str, ModelBuilder] = {
    "mlp": mlp,
    "mlp_bn": mlp_bn,
    "linear": linear,
    "cnn": cnn,
    "cnn_bn": cnn_bn,
    "char_lstm": char_lstm,
}


_GLOBAL_RNG = threading.Lock()


def build_model(
    name: str,
    in_features: int,
    out_features: int,
    seed: int,
    hidden: Sequence[int] | None = None,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Build model ``name`` with PyTorch's default initialisation drawn from ``seed``.

    torch's global generator is forked and restored, so building a model never changes the
    random numbers the rest of a program sees. A lock keeps two threads from seeding the
    one global generator at once (a server and its clients in one process did).
    """
    checks.one_of("model", name, list(MODELS))
    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = MODELS[name](in_features, out_features, None if hidden is None else tuple(hidden))
    return module.to(dtype)


__all__ = [
    "MODELS",
    "CharLSTM",
    "DigitsCNN",
    "build_model",
    "char_lstm",
    "cnn",
    "linear",
    "mlp",
    "mlp_bn",
]
