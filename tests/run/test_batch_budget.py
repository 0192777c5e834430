import numpy as np

from peakloc.io.inputs import Input
from peakloc.ops.lazy import Maps
from peakloc.run import batch
from peakloc.run.settings import Settings


def test_a_run_hands_its_budget_to_inputs_read_in_pieces(tmp_path, monkeypatch):
    np.save(tmp_path / "v.npy", np.random.default_rng(0).random((40, 30, 20)).astype(np.float32))
    seen = []
    real = batch.locate

    def spy(heatmaps, layout, settings, budget=None, slabs=None):
        seen.append((type(heatmaps), budget))
        return real(heatmaps, layout, settings, budget, slabs)

    monkeypatch.setattr(batch, "locate", spy)
    outcome = batch.run_chunk(batch.Job(Settings(), reraise=True), [Input(str(tmp_path / "v.npy"))], 4096)[0]
    assert outcome.errors == [] and len(outcome.rows) == 2
    assert seen == [(Maps, 4096)]
