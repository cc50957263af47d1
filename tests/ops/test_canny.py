"""What only dal.ops.canny has: scikit-image's canny as its oracle in 2D, geometric truths in 3D,
hysteresis run to convergence, any sigma, the scalar combinations that test_contract.py does not
take, and on a GPU, grids past one launch's limits. The contract (dtypes, shapes, layouts, bad
input, opcheck, reference) is in test_contract.py."""
import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from skimage import data, feature

from dal import ops
from dal.ops import reference


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def _inner(a: np.ndarray, margin: int) -> np.ndarray:
    return a[tuple(slice(margin, n - margin) for n in a.shape)]


def _shapes() -> np.ndarray:
    """Discs, squares and lines of several contrasts, lightly noisy."""
    yy, xx = np.mgrid[:128, :128]
    image = np.zeros((128, 128))
    image[((yy - 40) ** 2 + (xx - 45) ** 2) < 22**2] = 0.8
    image[((yy - 90) ** 2 + (xx - 90) ** 2) < 12.5**2] = 0.4
    image[20:50, 80:115] += 0.6
    image[75:110, 15:50] += 0.3
    image[118, 10:120] += 0.7
    image[60:120, 64] += 0.5
    return image + 0.02 * np.random.default_rng(0).standard_normal(image.shape)


def _mri_slice() -> np.ndarray:
    from nilearn import datasets

    volume = datasets.load_mni152_template(resolution=2).get_fdata()
    return np.ascontiguousarray(volume[:, :, volume.shape[2] // 2 + 5])


IMAGES = {
    "camera": lambda: data.camera().astype(np.float64) / 255.0,
    "coins": lambda: data.coins().astype(np.float64) / 255.0,
    "mri": _mri_slice,
    "shapes": _shapes,
}


@pytest.fixture(scope="module", params=sorted(IMAGES))
def image(request):
    return IMAGES[request.param]()


@pytest.mark.parametrize("sigma, low, high", [(1.0, 0.05, 0.15), (2.0, 0.1, 0.2), (1.5, 0.02, 0.3)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_2d_agrees_with_skimage(device, image, sigma, low, high, dtype):
    expected = feature.canny(image, sigma, low, high, mode="nearest")
    x = torch.from_numpy(image).to(dtype=dtype, device=device)[None, None]
    got = ops.canny(x, low, high, sigma)[0, 0].cpu().numpy()
    margin = int(np.ceil(4 * sigma))
    assert expected.sum() > 50  # the comparison is about real edges
    assert _iou(_inner(got, margin), _inner(expected, margin)) >= 0.99


@pytest.mark.parametrize("low, high", [(0.8, 0.9), (0.6, 0.95)])
def test_2d_quantile_thresholds_agree_with_skimage(device, image, low, high):
    expected = feature.canny(image, 1.0, low, high, mode="nearest", use_quantiles=True)
    x = torch.from_numpy(image).to(device)[None, None]
    got = ops.canny(x, low, high, 1.0, use_quantiles=True)[0, 0].cpu().numpy()
    assert _iou(_inner(got, 4), _inner(expected, 4)) >= 0.99


def test_batch_is_per_image(device):
    images = [IMAGES["shapes"](), IMAGES["coins"]()[:128, :128]]
    x = torch.from_numpy(np.stack(images)).to(device)[:, None].repeat(1, 2, 1, 1)
    got = ops.canny(x, 0.7, 0.9, 1.0, use_quantiles=True).cpu().numpy()
    for n, image in enumerate(images):
        expected = feature.canny(image, 1.0, 0.7, 0.9, mode="nearest", use_quantiles=True)
        for c in range(2):
            assert _iou(got[n, c], expected) >= 0.99


def _sphere_distance(shape, centres_radii):
    """Distance of every voxel centre to the nearest of the spheres' surfaces."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(np.float64)
    return np.min([np.abs(np.linalg.norm(grid - np.array(c), axis=-1) - r) for c, r in centres_radii], 0)


@pytest.mark.parametrize(
    "spheres",
    [
        [((24.3, 23.6, 25.1), 13.7)],  # one sphere, off the grid
        [((25.0, 24.2, 23.7), 16.2), ((25.0, 24.2, 23.7), 8.4)],  # nested spheres
        [((15.2, 16.1, 14.8), 7.3), ((34.6, 32.2, 33.9), 9.1)],  # two apart
    ],
)
@pytest.mark.parametrize("sigma", [1.0, 1.5])
def test_3d_finds_sphere_surfaces(device, spheres, sigma):
    shape = (50, 49, 48)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    volume = np.zeros(shape)
    for k, (centre, radius) in enumerate(spheres):
        volume[np.linalg.norm(grid - np.array(centre), axis=-1) < radius] = 1.0 if k % 2 == 0 else 0.4
    volume = ndi.gaussian_filter(volume, 0.7)
    x = torch.from_numpy(volume).to(device)[None, None]
    edges = ops.canny(x, 0.1, 0.3, sigma)[0, 0].cpu().numpy()
    distance = _sphere_distance(shape, spheres)
    assert edges.sum() > 100
    assert (distance[edges] <= 1.5).mean() >= 0.95
    surface = distance <= 0.5
    distance_to_edge = ndi.distance_transform_edt(~edges)
    assert (distance_to_edge[surface] <= 1.5).mean() >= 0.95


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_3d_constant_along_an_axis_is_2d_canny_per_slice(device, axis):
    image = ndi.gaussian_filter(np.random.default_rng(1).random((44, 40)), 2.0)
    volume = np.repeat(np.expand_dims(image, axis), 12, axis)
    edges_3d = ops.canny(torch.from_numpy(volume).to(device)[None, None], 0.001, 0.004, 1.0)[0, 0].cpu().numpy()
    edges_2d = ops.canny(torch.from_numpy(image).to(device)[None, None], 0.001, 0.004, 1.0)[0, 0].cpu().numpy()
    assert edges_2d.sum() > 50
    for k in range(1, 11):  # the two end slices are the 3D border
        assert _iou(np.take(edges_3d, k, axis), edges_2d) >= 0.99


def _smooth_random(shape, seed, dtype, device):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    pool = torch.nn.functional.avg_pool3d if len(shape) == 5 else torch.nn.functional.avg_pool2d
    return pool(x, 5, 1, 2).to(dtype=dtype, device=device)


def _agree(got: torch.Tensor, want: torch.Tensor, tolerance: float = 0.0) -> None:
    """Equal, but for a fraction `tolerance` of the edges (rounding can flip ties on plateaus)."""
    assert got.dtype == torch.bool and got.shape == want.shape
    assert (got != want).sum().item() <= tolerance * max(1, want.sum().item())


@pytest.mark.parametrize("shape", [(2, 2, 37, 41), (2, 1, 17, 19, 23)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
# The contract's cases are (hysteresis, use_quantiles) = (True, False) and (False, True): here the other two.
@pytest.mark.parametrize("hysteresis, use_quantiles", [(False, False), (True, True)])
def test_matches_reference(device, shape, dtype, hysteresis, use_quantiles):
    x = _smooth_random(shape, 0, dtype, device)
    low, high = (0.7, 0.9) if use_quantiles else (0.01, 0.05)
    got = ops.canny(x, low, high, 1.0, hysteresis, use_quantiles)
    want = reference.canny(x, low, high, 1.0, hysteresis, use_quantiles)
    _agree(got, want, 0.0 if dtype == torch.float64 else 0.01)
    assert got.sum() > 0


@pytest.mark.parametrize("sigma", [0.0, 0.5, 3.0])
def test_any_sigma(device, sigma):
    x = _smooth_random((1, 1, 40, 36), 3, torch.float64, device)
    _agree(ops.canny(x, 0.005, 0.02, sigma), reference.canny(x, 0.005, 0.02, sigma))


def _serpentine(legs: int, length: int) -> np.ndarray:
    """A corridor 6 pixels wide zig-zagging down and up the first axis: its walls are two long
    curves crossing the first axis many times. Contrast 0.3, ramping up to 1 over the first
    quarter of the first leg only: the only strong edges are there."""
    image = np.zeros((length + 16, 12 * legs + 16))
    for leg in range(legs):
        image[8 : length + 8, 8 + 12 * leg : 14 + 12 * leg] = 0.3
        if leg < legs - 1:
            row = slice(length + 2, length + 8) if leg % 2 == 0 else slice(8, 14)
            image[row, 8 + 12 * leg : 26 + 12 * leg] = 0.3
    ramp = np.clip(1.0 - 0.7 * np.arange(length) / (length / 4), 0.3, 1.0)
    image[8 : length + 8, 8:14] *= (ramp / 0.3)[:, None]
    return ndi.gaussian_filter(image, 1.0)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_hysteresis_runs_to_convergence(device, spatial_dims):
    image = _serpentine(5, 64)
    if spatial_dims == 3:
        image = np.repeat(image[:, None], 7, 1)  # the walls become surfaces zig-zagging along D
    x = torch.from_numpy(image)[None, None].to(device)
    low, high = (0.2, 1.5) if spatial_dims == 2 else (0.8, 6.0)  # 3D Sobel smooths by 4 more
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(8)  # on CPU, 8 slabs along the first axis: many rounds across them
        edges = ops.canny(x, low, high)
    finally:
        torch.set_num_threads(threads)
    candidates = ops.canny(x, low, high, hysteresis=False)
    strong = ops.canny(x, high, high, hysteresis=False)
    # The oracle of hysteresis: the connected components of the candidates holding a strong one.
    labels, _ = ndi.label(candidates[0, 0].cpu().numpy(), np.ones((3,) * spatial_dims, bool))
    kept = np.unique(labels[strong[0, 0].cpu().numpy()])
    assert np.array_equal(edges[0, 0].cpu().numpy(), np.isin(labels, kept[kept > 0]))
    assert 0 < strong.sum() < 0.1 * edges.sum()  # the strong stretch is short...
    assert edges.sum() >= 0.9 * candidates.sum()  # ...yet reaches the whole corridor,
    assert edges[..., -16:].sum() > 20  # its far end included


def test_one_volume_is_split_over_threads():
    x = _smooth_random((1, 1, 40, 33, 30), 4, torch.float32, "cpu")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = ops.canny(x, 0.01, 0.03)
        torch.set_num_threads(7)
        many = ops.canny(x, 0.01, 0.03)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single, many)


@pytest.mark.parametrize("shape", [(0, 1, 5, 5), (2, 3, 0, 5), (1, 1, 4, 0, 3), (1, 1, 2, 2), (1, 1, 1, 1, 1)])
def test_empty_and_tiny_input_have_no_edges(device, shape):
    """Every voxel of these is on the border, where there is never an edge."""
    out = ops.canny(torch.rand(shape, device=device), 0.1, 0.2)
    assert out.shape == shape and out.dtype == torch.bool and not out.any()


def test_torch_compile_fullgraph(device):
    def edges(x):
        return ops.canny(x * 2.0, 0.02, 0.1) & (x > 0)

    x = _smooth_random((2, 1, 24, 24), 8, torch.float32, device)
    compiled = torch.compile(edges, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x), edges(x))


def _edges_in_every_image(x, device):
    """Canny on the device and on the CPU; every image, the last ones too, has edges to grow."""
    want = ops.canny(x, 0.05, 0.5)
    assert want.flatten(1).any(1).all()
    _agree(ops.canny(x.to(device), 0.05, 0.5).cpu(), want, 0.01)


def test_2d_past_the_grid_limit(cuda_device):
    """N * C = 70000 images: more tiles along the hysteresis grid's z than one launch takes (65535)."""
    x = _smooth_random((70000, 1, 8, 8), 9, torch.float32, "cpu")
    x[..., 2:6, 2:6] += 4.0  # a square in every image
    _edges_in_every_image(x, cuda_device)


def test_3d_past_the_grid_limit(cuda_device):
    """N * C * ceil(D / 4) = 16500 * 4 = 66000 tiles along z."""
    x = _smooth_random((16500, 1, 16, 6, 6), 10, torch.float32, "cpu")
    x[..., 4:12, 2:4, 2:4] += 4.0
    _edges_in_every_image(x, cuda_device)
