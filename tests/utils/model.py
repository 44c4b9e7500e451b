"""A reusable model-test mixin: init, forward, batched equals unbatched, equivariance (float64
and float32), permutation and translation invariance, save and load.

A test class inherits :class:`ModelTests` and defines ``make_model()`` (a fresh model with an
``encode`` / ``decode_tensors`` API and ``latent_irreps``) and ``make_structures(dtype)``
(a list of ``Data`` structures).
"""

import torch
from e3nn.util.test import assert_equivariant
from torch_geometric.data import Batch

from tests.utils.equivariance import TOLERANCES, default_dtype

__all__ = ["SMALL", "ModelTests"]

#: Options of a small carbon-only autoencoder (tetris-sized: at most 4 atoms), shared by the model tests.
SMALL = dict(species=[6], max_atoms=4, lmax=2, mul=4, latent_lmax=2, latent_mul=4, signal_lmax=4)


class _Encode(torch.nn.Module):
    """``pos (N, 3) -> latent (1, dim)`` of one structure with fixed species, for e3nn's checker."""

    def __init__(self, model, z):
        super().__init__()
        self.model, self.z = model, z

    def forward(self, pos):
        from torch_geometric.data import Data

        return self.model.encode(Data(pos=pos, z=self.z))


class ModelTests:
    def make_model(self):
        raise NotImplementedError

    def make_structures(self, dtype):
        raise NotImplementedError

    def build(self, dtype):
        """The model in ``dtype``, with the parameters a model initialises to zero (e.g. an
        output head) drawn at random, so that no check passes on zeros."""
        torch.manual_seed(0)
        with default_dtype(dtype):
            model = self.make_model().to(dtype)
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.numel() and not parameter.any():
                    parameter.normal_()
        return model

    def test_init_and_forward(self):
        model = self.build(torch.float32)
        z = model.encode(self.make_structures(torch.float32))
        assert z.shape == (len(self.make_structures(torch.float32)), model.latent_irreps.dim)
        assert torch.isfinite(z).all()
        out = model.decode_tensors(z)
        assert out.num_structures == z.shape[0]

    def test_loss_backward(self):
        model = self.build(torch.float32)
        terms = model.loss(Batch.from_data_list(self.make_structures(torch.float32)))
        terms["loss"].backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)

    def test_batched_equals_unbatched(self):
        model = self.build(torch.float64)
        structures = self.make_structures(torch.float64)
        with default_dtype(torch.float64):
            together = model.encode(structures)
            alone = torch.cat([model.encode([s]) for s in structures])
        torch.testing.assert_close(together, alone, atol=1e-10, rtol=0)

    def test_encode_equivariant(self):
        """Rotations with parity and translations, float64 and float32. Tolerances are
        relative to the latent's largest component (float32 rounding of a translated input
        moves a latent of size 50 by ~50 * 1e-7 * |t|)."""
        for dtype, tol in TOLERANCES.items():
            model = self.build(dtype)
            for s in self.make_structures(dtype)[:3]:
                with default_dtype(dtype):
                    encode = _Encode(model, s.z)
                    scale = max(1.0, encode(s.pos.to(dtype)).abs().max().item())
                    errors = assert_equivariant(
                        encode, args_in=[s.pos.to(dtype)], irreps_in=["cartesian_points"],
                        irreps_out=[model.latent_irreps], tolerance=tol * scale,
                    )
                assert len(errors) == 4  # rotation, inversion (parity), translation, all three
                assert max(float(e.max()) for e in errors.values()) < tol * scale

    def test_encode_permutation_invariant(self):
        model = self.build(torch.float64)
        generator = torch.Generator().manual_seed(0)
        structures = self.make_structures(torch.float64)
        permuted = [s.subgraph(torch.randperm(s.num_nodes, generator=generator)) for s in structures]
        with default_dtype(torch.float64):
            torch.testing.assert_close(model.encode(permuted), model.encode(structures), atol=1e-10, rtol=0)

    def test_decoder_predictions_equivariant(self):
        """Teacher-forced decoder outputs of a rotated (or mirrored) batch are the rotated
        outputs: signals by the Wigner-D of their irreps, centre vectors by the rotation,
        logits unchanged. (Peak finding's own equivariance is tested in tests/sphere; the
        free-running round trip on a trained model in the slow test and in evaluation.)"""
        from e3nn import o3

        model = self.build(torch.float64)
        with default_dtype(torch.float64):
            batch = Batch.from_data_list(self.make_structures(torch.float64))
            for parity in (1, -1):
                q = torch.tensor([0.5, -0.3, 0.7, 0.4], dtype=torch.float64)
                rotation = parity * o3.quaternion_to_matrix(q / q.norm())
                moved = batch.clone()
                moved.pos = batch.pos @ rotation.T
                outputs = []
                for b in (batch, moved):
                    h = model.hierarchy(b)
                    predictions, species = model.decoder.teacher_forced(model.encoder(model._species_index[b.z], h), h)
                    outputs.append((predictions, species))
                assert all(p.signal.abs().max() > 1e-3 for p in outputs[0][0])  # not trivially zero
                for p, q in zip(outputs[0][0], outputs[1][0]):
                    lmax = int(p.signal.shape[-1] ** 0.5) - 1
                    D = o3.Irreps.spherical_harmonics(lmax, p=-1).D_from_matrix(rotation)
                    torch.testing.assert_close(q.signal, p.signal @ D.T, atol=1e-9, rtol=0)
                    torch.testing.assert_close(q.centre_vector, p.centre_vector @ rotation.T, atol=1e-9, rtol=0)
                    torch.testing.assert_close(q.centre_logit, p.centre_logit, atol=1e-9, rtol=0)
                torch.testing.assert_close(outputs[1][1], outputs[0][1], atol=1e-9, rtol=0)

    def test_save_and_load(self, tmp_path):
        model = self.build(torch.float32)
        path = tmp_path / "model.pt"
        torch.save(model.state_dict(), path)
        again = self.make_model()
        again.load_state_dict(torch.load(path, weights_only=True))
        structures = self.make_structures(torch.float32)
        torch.testing.assert_close(again.encode(structures), model.encode(structures))
