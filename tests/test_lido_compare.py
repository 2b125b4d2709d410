"""lido_jax.compare, the demo command and benchmarks/lido_table: every method from the
committed networks' initialisation, on tiny held-out test sets."""

import json
import math

import jax
import numpy as np
import pytest

import render
from benchmarks import lido_table
from lido_jax import compare, fit, metrics, pretrained, refine
from lido_jax.__main__ import main
from render.jax_renderer import FIRST_OBJECT, GROUND

STEPS = 6


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    code = main(["demo", "--out", str(out), "--scenes", "2", "--steps", str(STEPS),
                 "--iterations", "1", "--quiet"])
    assert code == 0
    return out


def _records(out):
    return [json.loads(p.read_text()) for p in sorted((out / "scenes").glob("scene_*.json"))]


def test_demo_writes_tables_figure_and_contact_sheet(demo):
    for name in ("fig5.png", "contact_sheet.png"):
        assert (demo / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (demo / "table.md").read_text()
    assert "| LV set | GBO | Simplex | LiDO T=5 | LiDO |" in table
    assert "| measure | INIT | GBO | Simplex | LiDO | LiDO-R |" in table
    summary = json.loads((demo / "summary.json").read_text())
    assert summary["scenes"] == 2 and summary["not_started"] == []
    assert [row["lv_set"] for row in summary["table1"]] == list(metrics.LV_SETS)
    assert len(_records(demo)) == 2


def test_records_are_consistent_with_their_traces(demo):
    for r in _records(demo):
        assert 0 <= r["paired"] <= min(r["detections"], r["objects"])
        init = {k: fit.finite_median(fit.as_array(v)) for k, v in r["errors"][compare.INIT].items()}
        lido = r["trace"][compare.LIDO]
        assert len(lido["time_s"]) == STEPS + 1 and lido["time_s"][0] == 0.0
        for k in metrics.LV_SETS:
            # Step 0 and the baselines' first evaluation are the initial scene itself.
            for m in (compare.LIDO, compare.GBO, compare.SIMPLEX):
                first = r["trace"][m]["errors"][k][0]
                assert (first is None and math.isnan(init[k])) or first == pytest.approx(init[k], rel=1e-5)
            for t, name in ((5, "LiDO T=5"), (STEPS, compare.LIDO)):
                got = fit.finite_median(fit.as_array(r["errors"][name][k]))
                want = lido["errors"][k][t]
                assert (want is None and math.isnan(got)) or got == pytest.approx(want, rel=1e-5)
        assert r["wall_s"]["LiDO T=5"] == pytest.approx(r["wall_s"][compare.LIDO] * 5 / STEPS)
        assert r["evaluations"][compare.GBO] >= 1 and r["evaluations"][compare.SIMPLEX] >= 1
        # LiDO-R is LiDO's scene through Blender: other pixels, same masks roughly.
        lido_img, blender_img = r["image"][compare.LIDO], r["image"][compare.LIDO_R]
        assert lido_img["ground MSE"] != blender_img["ground MSE"]
        assert abs(lido_img["ground IoU"][0] - blender_img["ground IoU"][0]) < 0.1


def test_summary_recomputes_from_the_records(demo):
    records = _records(demo)
    summary = json.loads((demo / "summary.json").read_text())
    init = [compare._arrays(r["errors"][compare.INIT]) for r in records]
    for row in summary["table1"]:
        for m, value in row["improvement"].items():
            pooled = lambda rs: np.concatenate([fit.as_array(x[row["lv_set"]]) for x in rs])  # noqa: E731
            want = metrics.median_improvement(pooled(init), pooled(
                [compare._arrays(r["errors"][m]) for r in records]))
            assert (value is None and math.isnan(want)) or value == pytest.approx(want)
        assert set(row["significant"]) <= set(compare.TABLE1_METHODS)
    for m, measures in summary["table2"].items():
        iou = np.concatenate([fit.as_array(r["image"][m]["object IoU"]) for r in records])
        assert measures["object IoU"] == pytest.approx(np.nanmean(iou))
    t = summary["targets"]
    assert t["lido_over_simplex_time"] == pytest.approx(
        summary["seconds"][compare.LIDO] / summary["seconds"][compare.SIMPLEX])
    assert t["lido_time_met"] == (t["lido_over_simplex_time"] <= 0.1)
    assert set(summary["one_step"]) == set(refine.OBJECT_FIELDS) | set(refine.GLOBAL_FIELDS)
    for part, fields in (("objects", refine.OBJECT_FIELDS), ("globals", refine.GLOBAL_FIELDS)):
        for who in ("network", "start"):
            pooled = np.concatenate([np.reshape(np.array(r["one_step"][part][who], float),
                                                (-1, len(fields))) for r in records])
            for i, f in enumerate(fields):
                assert summary["one_step"][f][who] == pytest.approx(np.nanmedian(pooled[:, i]))
    curves = summary["curves"]
    for m in (compare.GBO, compare.SIMPLEX, compare.LIDO):
        for k in metrics.LV_SETS:
            assert len(curves["median"][m][k]) == len(curves["time_s"])
            assert curves["median"][m][k][0] == pytest.approx(curves["init"][k])


def test_lido_table_quick(tmp_path):
    out = tmp_path / "lido_table.json"
    lido_table.main(["--quick", "--no-blender", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["header"]["config"]["scenes"] == 2 and result["scenes"] == 2
    assert [r["index"] for r in result["records"]] == [0, 1]
    assert compare.LIDO_R not in result["table2"]
    assert set(result["warmup_s"]) == {compare.LIDO, compare.GBO, compare.SIMPLEX}
    assert "Table 2" in out.with_suffix(".md").read_text()
    for suffix in (".png", "_contact.png"):
        assert out.with_name(out.stem + suffix).read_bytes()[:4] == b"\x89PNG"
    # --resume reuses the records; without it they are made again.
    records = sorted((tmp_path / "lido_table_fits" / "scenes").glob("scene_*.json"))
    stamps = [p.stat().st_mtime_ns for p in records]
    lido_table.main(["--quick", "--no-blender", "--resume", "--out", str(out)])
    assert [p.stat().st_mtime_ns for p in records] == stamps


def gt_scene():
    """A GT scene with slots 0 and 1 valid and slot 2 not."""
    return render.random_scene(jax.random.key(0), num_objects=2, max_objects=3)


def _image(instance, rgb):
    h, w = instance.shape
    return render.Image(rgb=rgb, depth=np.zeros((h, w)), normals=np.zeros((h, w, 3)),
                        instance=instance)


def test_paired_image_measures_follow_the_pairing():
    gt = gt_scene()
    h = w = 16
    gt_instance = np.full((h, w), GROUND)
    gt_instance[8:12, 2:6] = FIRST_OBJECT + 0             # GT object 0
    gt_instance[8:12, 10:14] = FIRST_OBJECT + 1           # GT object 1
    truth = _image(gt_instance, np.zeros((h, w, 3)))
    pred_instance = gt_instance.copy()
    # Detection 0 sits exactly on GT object 1, detection 1 on GT object 0 (swapped ids),
    # detection 2 is a superfluous object on the ground.
    pred_instance[8:12, 2:6] = FIRST_OBJECT + 1
    pred_instance[8:12, 10:14] = FIRST_OBJECT + 0
    pred_instance[13:15, 6:9] = FIRST_OBJECT + 2
    pred = _image(pred_instance, np.full((h, w, 3), 0.5))

    out = compare.paired_image_measures(pred, truth, gt, np.array([1, 0, -1]))
    np.testing.assert_allclose(out["object IoU"][:2], [1.0, 1.0])
    assert np.isnan(out["object IoU"][2])                  # invalid GT slot
    np.testing.assert_allclose(out["object MSE"][:2], [0.25, 0.25])
    ground = metrics.ground_mask(gt_instance, gt)
    assert ground.sum() > 20
    lost = ground[13:15, 6:9].sum()
    assert lost > 0
    assert out["ground IoU"][0] == pytest.approx((ground.sum() - lost) / ground.sum())

    # Detection 0 unpaired: GT object 1 is missed (IoU 0, not NaN).
    out = compare.paired_image_measures(pred, truth, gt, np.array([-1, 0, -1]))
    np.testing.assert_allclose(out["object IoU"][:2], [1.0, 0.0])
    # A GT object drawn nowhere has no IoU (NaN).
    hidden = gt_instance.copy()
    hidden[8:12, 10:14] = GROUND
    out = compare.paired_image_measures(pred, _image(hidden, np.zeros((h, w, 3))), gt,
                                        np.array([1, 0, -1]))
    assert out["object IoU"][0] == pytest.approx(1.0) and np.isnan(out["object IoU"][1])

def test_compare_rejects_an_image_of_the_wrong_size():
    pre = pretrained.load()
    comparer = compare.Comparer(pre, compare.CompareConfig(steps=2, lido_checkpoints=()))
    gt = gt_scene()
    arrays = {"rgb": np.zeros((32, 32, 3), np.float32), "instance": np.zeros((32, 32), np.int32),
              "depth": np.zeros((32, 32), np.float32)}
    with pytest.raises(ValueError, match=r"observed image is \(32, 32\).*trained at \(64, 64\)"):
        compare.compare_scene(comparer, gt, arrays)


def test_compare_config_checks_its_fields():
    with pytest.raises(ValueError, match="lido_checkpoints"):
        compare.CompareConfig(steps=5, lido_checkpoints=(5,))
    with pytest.raises(ValueError, match="steps"):
        compare.CompareConfig(steps=0)


def test_one_step_errors_compare_a_prediction_with_its_start():
    truth = gt_scene()
    start = truth.replace(objects=truth.objects.replace(
        azimuth=truth.objects.azimuth + 0.3, position=truth.objects.position + 0.1),
        camera=truth.camera.replace(height=truth.camera.height + 0.2))
    g = np.asarray(refine.global_vector(truth))
    votes = np.broadcast_to(np.asarray(refine.global_vector(start)), (3, 9))
    # A perfect prediction, with the azimuth one full turn away (same angle).
    objects = np.asarray(refine.object_vectors(truth)).copy()
    objects[:, 3] += 2 * np.pi
    out = compare.one_step_errors((objects, np.broadcast_to(g, (3, 9))), start, votes, truth)
    assert out["objects"]["network"].shape == (2, 7) and out["globals"]["network"].shape == (2, 9)
    np.testing.assert_allclose(out["objects"]["network"], 0.0, atol=1e-5)
    np.testing.assert_allclose(out["globals"]["network"], 0.0, atol=1e-5)
    np.testing.assert_allclose(out["objects"]["start"][:, :2], 0.1, rtol=1e-5)
    np.testing.assert_allclose(out["objects"]["start"][:, 3], 0.3, rtol=1e-5)
    np.testing.assert_allclose(out["objects"]["start"][:, 4:], 0.0, atol=1e-6)
    np.testing.assert_allclose(out["globals"]["start"][:, 0], 0.2, rtol=1e-5)
    np.testing.assert_allclose(out["globals"]["start"][:, 1:], 0.0, atol=1e-6)


def test_a_scene_without_detections_gives_an_empty_comparison(demo):
    """No detection (a threshold above every score): every method runs on the globals
    alone, no object has a latent error, and every visible GT object counts as missed."""
    import dataclasses

    pre = pretrained.load()
    pre = dataclasses.replace(pre, init_config=dataclasses.replace(pre.init_config, threshold=1 - 1e-7))
    comparer = compare.Comparer(pre, compare.CompareConfig(steps=2, lido_checkpoints=(1,),
                                                           iterations=1, blender=False))
    from lido_jax import dataset
    gt, arrays = dataset.load_scene(sorted((demo / "testset_64px_seed1").glob("scene_*.npz"))[0])
    record, pictures = compare.compare_scene(comparer, gt, arrays)
    assert record["detections"] == 0 and record["paired"] == 0
    for m in (compare.INIT, compare.GBO, compare.SIMPLEX, compare.LIDO):
        for k in metrics.OBJECT_LV_SETS:
            assert all(v is None for v in record["errors"][m][k])
        ious = [v for v in record["image"][m]["object IoU"] if v is not None]
        assert ious and all(v == 0.0 for v in ious)
    assert record["one_step"]["objects"]["network"] == []
    assert set(pictures) == {"observed", compare.INIT, compare.GBO, compare.SIMPLEX, compare.LIDO}
