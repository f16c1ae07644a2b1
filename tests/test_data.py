"""The real CIFAR-10 data: shapes, dtypes, split, statistics; and the on-device augmentation."""
import pytest
import torch

import helpers as H


def test_raw_shapes_and_labels(raw):
    assert raw["train_x"].shape == (50000, 3, 32, 32) and raw["train_x"].dtype == torch.uint8
    assert raw["test_x"].shape == (10000, 3, 32, 32) and raw["test_x"].dtype == torch.uint8
    assert raw["train_y"].dtype == torch.int64
    assert torch.bincount(raw["train_y"]).tolist() == [5000] * 10
    assert torch.bincount(raw["test_y"]).tolist() == [1000] * 10
    assert raw["train_y"][:8].tolist() == [6, 9, 9, 4, 1, 1, 2, 7]
    assert raw["train_x"][0, 0, 0, :8].tolist() == [59, 43, 50, 68, 98, 119, 139, 145]  # red, first row


def test_training_channel_means(raw):
    mean, std = H.channel_stats(raw["train_x"])
    assert torch.allclose(mean * 255, torch.tensor([125.307, 122.950, 113.865]), atol=2e-3)
    assert torch.allclose(std * 255, torch.tensor([62.993, 62.089, 66.705]), atol=2e-3)


def test_split_is_fixed_disjoint_and_complete(raw, data):
    assert len(data.train[0]) == 45000 and len(data.val[0]) == 5000 and len(data.test[0]) == 10000
    assert len(data.full[0]) == 50000
    x, y, vx, vy = H.split_train_val(raw["train_x"], raw["train_y"], 5000, seed=0)
    assert torch.equal(vx, data.val[0]) and torch.equal(y, data.train[1])  # the same split every time
    fingerprints = lambda images: {image.numpy().tobytes() for image in images}  # noqa: E731
    train_f, val_f = fingerprints(data.train[0]), fingerprints(data.val[0])
    assert not train_f & val_f and len(train_f | val_f) == len(fingerprints(raw["train_x"]))
    # normalisation statistics come from the 45k training split only
    mean, _ = H.channel_stats(data.train[0])
    assert torch.equal(mean, data.mean)


def test_quick_subsets_follow_the_same_path(data_dir):
    quick = H.prepare_data(data_dir, subset={"train": 100, "val": 50, "test": 40})
    assert (len(quick.train[0]), len(quick.val[0]), len(quick.test[0]), len(quick.full[0])) == (100, 50, 40, 150)


def test_missing_data_without_network_names_both_fixes(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    try:
        H.load_cifar10(tmp_path)
    except RuntimeError as error:
        message = str(error)
    assert "download" in message and H.CIFAR_FOLDER in message and str(tmp_path) in message


# --- augmentation -----------------------------------------------------------------------------------

def test_every_augmented_image_is_a_crop_and_flip_of_its_source(raw):
    source = raw["train_x"][:512]
    out, dy, dx, flip = H.crop_flip(source, pad=4, generator=torch.Generator().manual_seed(1), return_params=True)
    assert out.shape == source.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(source, (4, 4, 4, 4))
    for i in range(len(source)):
        crop = padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop), i


def test_all_offsets_and_both_flips_occur(raw):
    _, dy, dx, flip = H.crop_flip(raw["train_x"][:4000], pad=4, generator=torch.Generator().manual_seed(2),
                                  return_params=True)
    assert set(zip(dy.tolist(), dx.tolist())) == {(a, b) for a in range(9) for b in range(9)}
    assert 0.45 < flip.float().mean() < 0.55


def test_augmentation_changes_images(raw):
    source = raw["train_x"][:1000]
    out = H.crop_flip(source, generator=torch.Generator().manual_seed(3))
    changed = (out != source).flatten(1).any(1).float().mean()
    assert changed > 0.95  # only the unshifted, unflipped draws (1/162) stay the same


def test_cutout_blanks_one_clipped_square_per_image():
    """Each image loses exactly one axis-aligned rectangle: the size x size square around a uniform centre,
    clipped at the borders (sides from size/2 to size), and nothing else changes."""
    size, n = 12, 4000
    images = torch.ones(n, 3, 32, 32)
    out, mask = H.cutout(images, size, torch.Generator().manual_seed(5), return_mask=True)
    assert out.shape == images.shape and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out == 0, mask.expand_as(out))  # zero exactly where the mask is, in every channel
    rows, cols = mask[:, 0].any(2), mask[:, 0].any(1)  # (n, 32) each
    assert torch.equal(mask[:, 0], rows[:, :, None] & cols[:, None, :])  # a rectangle
    heights, widths = rows.sum(1), cols.sum(1)
    for covered, sides in ((rows, heights), (cols, widths)):
        # contiguous runs, sides between 6 (centre on a border) and 12, and both extremes occur
        assert sides.min() == size // 2 and sides.max() == size
        first, last = covered.float().argmax(1), 31 - covered.flip(1).float().argmax(1)
        assert torch.equal(last - first + 1, sides)
    # the mean side over uniform centres 0..31: min(31, c + 5) - max(0, c - 6) + 1
    expected = sum(min(31, c + 5) - max(0, c - 6) + 1 for c in range(32)) / 32
    assert abs(heights.float().mean() - expected) < 0.2 and abs(widths.float().mean() - expected) < 0.2


def test_batches_with_cutout_blank_squares_and_without_it_draw_nothing_more(raw):
    x, y = raw["train_x"][:256], raw["train_y"][:256]
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)
    plain = H.Batches((x, y), 128, (mean, std), "cpu", shuffle=True, augment=True, seed=6)
    off = H.Batches((x, y), 128, (mean, std), "cpu", shuffle=True, augment=H.Augmentation(cutout=0), seed=6)
    on = H.Batches((x, y), 128, (mean, std), "cpu", shuffle=True, augment=H.Augmentation(cutout=8), seed=6)
    for (a, la), (b, lb), (c, lc) in zip(plain, off, on):
        assert torch.equal(a, b) and torch.equal(la, lb) and torch.equal(la, lc)
        blank = (c == 0).all(1).flatten(1).sum(1)  # pixels zero in all three channels
        assert (blank >= 16).all() and (blank <= 64 + (a == 0).all(1).flatten(1).sum(1)).all()
        assert not torch.equal(a, c)


@pytest.mark.parametrize("whole_epoch", [False, True])
def test_batches_keep_labels_with_their_images(whole_epoch):
    """Image k is filled with the value 10 + k: after shuffling, cropping and flipping, the centre pixel still
    names the source image, whose label must come with it (per batch, or augmented as a whole epoch)."""
    n = 200
    x = (10 + torch.arange(n, dtype=torch.uint8)).view(n, 1, 1, 1).expand(n, 3, 32, 32).contiguous()
    y = torch.arange(n) % 10
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)
    batches = H.Batches((x, y), 64, (mean, std), "cpu", shuffle=True, augment=True, seed=0, whole_epoch=whole_epoch)
    seen = []
    for images, labels in batches:
        assert images.shape[1:] == (3, 32, 32) and images.dtype == torch.float32
        assert images.is_contiguous(memory_format=torch.channels_last)
        centre = (images[:, 0, 16, 16] * 63.75 + 127.5).round().long()   # undo the normalisation
        assert torch.equal((centre - 10) % 10, labels)
        seen += (centre - 10).tolist()
    assert sorted(seen) == list(range(n)) and seen != list(range(n))  # a permutation, shuffled


def test_whole_epoch_preparation_gives_the_same_batches_without_augmentation(raw):
    """Shuffled, not augmented: preparing the epoch in one pass and slicing it yields exactly the per-batch
    stream (the same permutation is drawn), including the smaller last batch."""
    x, y = raw["train_x"][:300], raw["train_y"][:300]
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)
    per_batch = H.Batches((x, y), 128, (mean, std), "cpu", shuffle=True, seed=4)
    whole = H.Batches((x, y), 128, (mean, std), "cpu", shuffle=True, seed=4, whole_epoch=True)
    for epoch in range(2):
        pairs = list(zip(per_batch, whole))
        assert [len(yb) for (_, yb), _ in pairs] == [128, 128, 44]
        for (xa, ya), (xb, yb) in pairs:
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
            assert xb.is_contiguous(memory_format=torch.channels_last)
