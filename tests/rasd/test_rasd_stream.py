"""On-the-fly streams: worker seeding, reproducibility and the reference's buffer reuse."""

import pytest
import torch
from torch.utils.data import DataLoader

from synthvlp.rasd.config import FieldsConfig, RaSDConfig, StreamConfig
from synthvlp.rasd.loss import PrototypeDisentangleLoss
from synthvlp.rasd.stream import BufferedSynthesizer, RaSDStream, RaSDSynthesizer


def small_config(**stream) -> RaSDConfig:
    return RaSDConfig(
        fields=FieldsConfig(num_labels=4), stream=StreamConfig(spatial_size=(24, 24), **{"batch_size": 4, **stream})
    )


def test_synthesizer_pairs_are_reproducible():
    synth = RaSDSynthesizer.from_config(small_config())
    images, labels = synth(3)
    assert images.shape == labels.shape == (3, 1, 24, 24)
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    again = synth.set_random_state(0)(3)
    assert torch.equal(again[0], images) and torch.equal(again[1], labels)


def test_stream_length_and_reproducibility():
    stream = RaSDStream(small_config(), length=5, chunk=2)
    first = [labels for _, labels in DataLoader(stream, batch_size=None)]
    second = [labels for _, labels in DataLoader(stream, batch_size=None)]
    assert len(first) == 5 and all(torch.equal(a, b) for a, b in zip(first, second))


def test_workers_draw_different_streams():
    loader = DataLoader(RaSDStream(small_config(), length=4), batch_size=None, num_workers=2)
    labels = [labels for _, labels in loader]  # workers interleave: 0, 1, 0, 1
    assert len(labels) == 4 and not torch.equal(labels[0], labels[1])
    batched = next(iter(DataLoader(RaSDStream(small_config(), length=4), batch_size=4)))
    assert batched[0].shape == (4, 1, 24, 24)


def test_buffer_replaces_the_oldest_fraction():
    buffered = BufferedSynthesizer.from_config(small_config(refresh_fraction=0.25))
    before = next(buffered)[1].clone()
    after = next(buffered)[1]
    changed = [not torch.equal(a, b) for a, b in zip(before, after)]
    assert changed == [True, False, False, False]
    changed = [not torch.equal(a, b) for a, b in zip(before, next(buffered)[1])]
    assert changed == [True, True, False, False]


def test_full_refresh_gives_fresh_batches():
    buffered = BufferedSynthesizer.from_config(small_config())
    before, after = next(buffered)[1], next(buffered)[1]
    assert all(not torch.equal(a, b) for a, b in zip(before, after))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("spatial", [(64, 64), (32, 32, 32)])
def test_cuda_synthesis_and_loss(spatial):
    config = RaSDConfig(fields=FieldsConfig(num_labels=4), stream=StreamConfig(spatial_size=spatial, batch_size=2))
    synth = RaSDSynthesizer.from_config(config, "cuda")
    images, labels = synth(2)
    assert images.is_cuda and labels.is_cuda and images.shape == labels.shape == (2, 1, *spatial)
    again = synth.set_random_state(0)(2)
    assert torch.equal(again[0], images) and torch.equal(again[1], labels)
    features = torch.randn(2, 8, *spatial, device="cuda", requires_grad=True)
    PrototypeDisentangleLoss(num_labels=4)(features, labels).total.backward()
    assert torch.isfinite(features.grad).all()
