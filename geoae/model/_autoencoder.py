"""The geometric autoencoder: structures to one point of O(3) irreps and back."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import ase
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.utils import scatter

from geoae.cluster import check_cluster_method
from geoae.data import from_atoms, to_atoms
from geoae.nn import irreps_from_lmax

from ._decoder import Decoded, Decoder
from ._encoder import Encoder
from ._hierarchy import Hierarchy, build_hierarchy, level_sizes, num_levels_for
from ._loss import teacher_forced_loss
from ._refine import decoded_hierarchy, feedback_latent, refine_decoding
from ._select import regroup_structures, select_structures, take_structures

__all__ = ["Autoencoder"]

Structures = ase.Atoms | Sequence[ase.Atoms] | Sequence[Data] | Data


class Autoencoder(torch.nn.Module):
    """E(3)-equivariant geometric autoencoder.

    :meth:`encode` pools each structure recursively to one point (:class:`Encoder`); that
    point's features, irreps :attr:`latent_irreps`, are the latent. :meth:`decode` unpools
    the latent recursively back into atoms (:class:`Decoder`). Rotating or mirroring the
    input rotates the latent by its Wigner-D matrices and the output by the same operation;
    translations and permutations of the input change nothing.

    Decoded structures are centred on the centroid (mean position) of their atoms, which is
    where the input's centroid was mapped: ``decode(encode(x))`` reproduces
    ``x - x.mean(0)``; :meth:`reconstruct` adds the input's centroid back.

    Args:
        species: atomic numbers the model knows (its species channels, in order).
        max_atoms: largest structure; with ``pool_ratio`` it fixes the number of levels.
        lmax, mul: hidden features, every ``l <= lmax`` with ``mul`` copies
            (``irreps_from_lmax``), and the degree of the convolutions' spherical harmonics.
            The encoder's features have both parities (so the latent's pseudotensors,
            pseudoscalars included, are reached).
        parity: parities of the decoder's features: ``"sh"`` (``(-1)**l`` only: the signals,
            positions and species need no more, and it halves the tensor-product paths) or
            ``"both"``. With ``"sh"`` the decoder reads the latent's ordinary irreps only; it
            decodes mirror images all the same, by equivariance.
        latent_lmax, latent_mul: latent irreps ``irreps_from_lmax(latent_mul, latent_lmax)``,
            every ``l <= latent_lmax`` with both parities, so mirror images differ even in
            their invariants (pseudoscalars change sign).
        signal_lmax: degree of the children's spherical signals (at most ``2 * lmax``).
        r_max: cutoff of the convolutions' neighbour graphs (length units of the data).
        pool_ratio: each pooling level keeps ``ceil(pool_ratio * n)`` clusters.
        cluster: how each level clusters, a ``method`` of
            :func:`geoae.cluster.symmetric_kmeans` (``"exact"`` enumerates partitions, up to
            10 points per structure; ``"ward"`` agglomerates, any size); ``"auto"``: exact
            when ``max_atoms <= 10``, else ward.
        convs_per_level: convolutions before each pooling and each unpooling.
        min_radius: a child closer than this to its parent is the parent's centre child; the
            convolutions fade directions in over this length (continuous at zero length).
        merge_radius: decoded children closer than this are merged.
        child_count: how the decoder reads a point's number of children off its signal,
            ``"integral"`` (the signal's integral, :func:`geoae.sphere.count_vectors`) or
            ``"peaks"`` (peaks above :func:`geoae.sphere.find_peaks`' thresholds); see
            :class:`Decoder`. It changes decoding only, not training or the weights.
        conv, num_basis, radial_hidden: the convolution family and its radial network.
        avg_num_neighbors: the convolutions divide their summed messages by its square root;
            about the mean number of neighbours within ``r_max`` (QM9 atoms at 3.5 A: ~10).
    """

    def __init__(
        self,
        species: Sequence[int],
        max_atoms: int,
        lmax: int = 4,
        mul: int = 8,
        parity: str = "sh",
        latent_lmax: int = 4,
        latent_mul: int = 8,
        signal_lmax: int = 4,
        r_max: float = 3.5,
        pool_ratio: float = 0.5,
        cluster: str = "auto",
        convs_per_level: int = 1,
        min_radius: float = 0.1,
        merge_radius: float = 0.3,
        child_count: str = "integral",
        conv: str = "nequip",
        num_basis: int = 8,
        radial_hidden: int = 32,
        avg_num_neighbors: float = 4.0,
    ):
        super().__init__()
        if signal_lmax > 2 * lmax:
            raise ValueError(f"signal_lmax={signal_lmax} exceeds 2 * lmax = {2 * lmax}: the bloom head cannot reach it")
        cluster = check_cluster_method(cluster, max_atoms)
        self.config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.config["species"] = [int(s) for s in species]
        self.species = list(self.config["species"])
        self.max_atoms, self.pool_ratio, self.cluster = max_atoms, pool_ratio, cluster
        self.num_levels = num_levels_for(max_atoms, pool_ratio)
        self.min_radius = min_radius
        self.signal_lmax = signal_lmax
        self.latent_irreps = irreps_from_lmax(latent_mul, latent_lmax)
        conv_kwargs = dict(
            conv=conv, lmax=lmax, num_basis=num_basis, radial_hidden=radial_hidden, r_min=min_radius,
            avg_num_neighbors=avg_num_neighbors,
        )
        common = dict(
            num_species=len(self.species),
            irreps_latent=self.latent_irreps,
            num_levels=self.num_levels,
            convs_per_level=convs_per_level,
            r_max=r_max,
        )
        self.encoder = Encoder(irreps_hidden=irreps_from_lmax(mul, lmax, "both"), **common, **conv_kwargs)
        self.decoder = Decoder(
            irreps_hidden=irreps_from_lmax(mul, lmax, parity),
            signal_lmax=signal_lmax,
            min_radius=min_radius,
            merge_radius=merge_radius,
            child_count=child_count,
            max_points=level_sizes(max_atoms, pool_ratio),
            **common,
            **conv_kwargs,
        )
        lookup = torch.full((max(self.species) + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(self.species)] = torch.arange(len(self.species))
        self.register_buffer("_species_index", lookup, persistent=False)

    # ------------------------------------------------------------------ inputs
    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.unreadout.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.decoder.unreadout.weight.device

    def as_batch(self, structures: Structures) -> Batch:
        """Checked batch of ``structures`` (``ase.Atoms``, a list of them or of ``Data``, or a ``Batch``)
        in the model's dtype and device; a structure the model cannot take raises ``ValueError``
        naming it and saying why."""
        if isinstance(structures, ase.Atoms):
            structures = [structures]
        if isinstance(structures, Batch):
            batch = copy.copy(structures)  # the caller's batch keeps its tensors
        else:
            data_list = [structures] if isinstance(structures, Data) else [
                s if isinstance(s, Data) else from_atoms(s, source=f"structure {i}", dtype=self.dtype) for i, s in enumerate(structures)
            ]
            batch = Batch.from_data_list(data_list) if data_list else None
        if batch is None or batch.num_graphs == 0:
            raise ValueError("no structure to encode")
        self._check(batch)
        batch = batch.to(self.device)
        batch.pos = batch.pos.to(self.dtype)
        return batch

    def _check(self, batch: Batch) -> None:
        """Raise ``ValueError`` naming the first structure of ``batch`` that the model cannot
        take (an element it was not trained on, or more than ``max_atoms`` atoms) and why."""
        unknown = ~torch.isin(batch.z, torch.tensor(self.species, device=batch.z.device))  # (N,)
        too_large = torch.bincount(batch.batch, minlength=batch.num_graphs) > self.max_atoms  # (B,)
        failing = too_large | (torch.bincount(batch.batch[unknown], minlength=batch.num_graphs) > 0)  # (B,)
        if not bool(failing.any()):
            return
        i = int(failing.nonzero()[0])
        sources = getattr(batch, "source", None)
        name = (sources[i] if sources is not None else None) or f"structure {i}"
        in_structure = batch.batch == i  # (N,)
        if bool((unknown & in_structure).any()):
            unknown_z = batch.z[unknown & in_structure].unique().tolist()  # sorted
            raise ValueError(f"{name}: atomic numbers {unknown_z} are not among the model's species {self.species}")
        raise ValueError(f"{name}: {int(in_structure.sum())} atoms, more than the model's max_atoms={self.max_atoms}")

    def hierarchy(self, batch: Batch) -> Hierarchy:
        """The pooling hierarchy of a batch (no gradient), each structure first moved to its
        centroid (in float64, so a translation changes nothing even in float32)."""
        with torch.no_grad():
            pos = batch.pos.double()
            pos = (pos - scatter(pos, batch.batch, dim=0, reduce="mean")[batch.batch]).to(batch.pos.dtype)
            return build_hierarchy(pos, batch.batch, self.num_levels, self.pool_ratio, self.cluster)

    # ------------------------------------------------------------------ API
    def encode(self, structures: Structures) -> torch.Tensor:
        """Latents ``(B, latent_irreps.dim)`` of ``structures`` (list of ``ase.Atoms`` or a batch)."""
        batch = self.as_batch(structures)
        return self.encoder(self._species_index[batch.z], self.hierarchy(batch))

    def decode_tensors(
        self,
        latent: torch.Tensor,
        refine_steps: int = 0,
        candidates: int = 1,
        screen_steps: int = 50,
        rounds: int = 0,
        settled: float = 1e-3,
        feedback_rounds: int = 0,
        feedback: float = 2.0,
    ) -> Decoded:
        """Free-running decoding to tensors (positions, species indices, batch); with
        ``refine_steps > 0``, then :meth:`refine`.

        ``candidates > 1`` (with ``refine_steps``): decode each structure ``candidates``
        ways, plainly and with its ``k``-th most uncertain atom count rounded the other way
        (``k < candidates - 1``; :func:`geoae.model.flipped_counts`), refine every candidate
        ``screen_steps`` steps, and refine, for each structure, the candidate with the smallest
        residual then (the one the encoder maps closest onto its latent) ``refine_steps`` steps
        from its decoding. ``screen_steps >= refine_steps`` refines every candidate fully and
        keeps the smallest residual.

        ``rounds > 0`` (with ``refine_steps``): then, so many times, decode the atoms again
        from the upper levels of the refined decoding's tree as refinement moved them
        (:func:`geoae.model.decoded_hierarchy`, :meth:`Decoder.forward`'s ``hierarchy``),
        nearer the true ones than the decoder first placed them, so that the atoms' counts
        and species are read as from true parents; refine that ``refine_steps`` steps, and
        keep, for each structure, whichever of it and the decoding before has the smaller
        residual. A round leaves alone the structures whose residual is ``settled`` or less
        (near zero: very likely right already).

        ``feedback_rounds > 0`` (with ``refine_steps``): then so many rounds more, each with
        the decoder reading, instead of the latent, the latent plus ``feedback`` times what
        the decoding so far misses of it (:func:`geoae.model.feedback_latent`), so that the
        atoms' counts and species lean towards what is missing; refined against the latent
        itself and kept where its residual is smaller, as in the rounds before.

        Costs ``candidates * screen_steps + refine_steps`` steps (``refine_steps`` with one
        candidate), and ``refine_steps`` more per round (of either kind) for the structures
        not settled.
        """
        if candidates < 1 or (candidates > 1 and refine_steps <= 0):
            raise ValueError(
                f"candidates must be 1, or more with refine_steps > 0 (the residual after refinement "
                f"chooses among them); got candidates={candidates}, refine_steps={refine_steps}"
            )
        for name, value in (("rounds", rounds), ("feedback_rounds", feedback_rounds)):
            if value < 0 or (value > 0 and refine_steps <= 0):
                raise ValueError(f"{name} must be 0, or more with refine_steps > 0; got {name}={value}, refine_steps={refine_steps}")
        if candidates > 1 and screen_steps < 1:
            raise ValueError(f"screen_steps must be at least 1 to choose among candidates, got {screen_steps}")
        if not isinstance(latent, torch.Tensor) or latent.dim() != 2 or latent.shape[1] != self.latent_irreps.dim:
            shape = tuple(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__
            raise ValueError(f"latent must have shape (B, {self.latent_irreps.dim}) ({self.latent_irreps}), got {shape}")
        if not latent.is_floating_point():
            raise ValueError(f"latent must be a floating-point tensor, got dtype {latent.dtype}")
        if not torch.isfinite(latent).all():
            raise ValueError("latent holds NaN or infinite values")
        latent = latent.to(device=self.device, dtype=self.dtype)
        decoded = self.decoder(latent)
        if refine_steps <= 0:
            return decoded
        if candidates > 1:
            decodings = [decoded] + [self.decoder(latent, flip) for flip in range(candidates - 1)]
            steps = min(screen_steps, refine_steps)
            screened = [self.refine(latent, d, steps) for d in decodings]
            choice = torch.stack([s.residual for s in screened]).argmin(dim=0)  # (B,)
            if steps == refine_steps:
                best = select_structures(screened, choice)
            else:
                best = self.refine(latent, select_structures(decodings, choice), refine_steps)
        else:
            best = self.refine(latent, decoded, refine_steps)
        for k in range(rounds + feedback_rounds):
            unsettled = (best.residual > settled).nonzero().flatten()  # (K,): the structures a round decodes again
            if len(unsettled) == 0:
                break
            part, latent_part = take_structures(best, unsettled), latent[unsettled]
            guide = latent_part if k < rounds else feedback_latent(self.encoder, latent_part, part, feedback)  # (K, latent)
            again = self.refine(latent_part, self.decoder(guide, hierarchy=decoded_hierarchy(part)), refine_steps)
            again = regroup_structures([again], [unsettled], best.num_structures)  # back among all (the others: no atom)
            best = select_structures([best, again], (again.residual < best.residual).long())
        return best

    def refine(self, latent: torch.Tensor, decoded: Decoded, steps: int = 200, lr: float = 0.05, species_lr: float = 0.1) -> Decoded:
        """``decoded`` (from ``latent (B, latent_irreps.dim)``) with its atoms moved, and their
        species relaxed, until the encoder, pooling them through the tree the decoding made,
        maps them onto ``latent`` (:func:`geoae.model.refine_decoding`: ``steps`` gradient
        steps, from ``lr`` length units and ``species_lr`` down to zero; ``species_lr=0``
        keeps the decoded species). Counts and the upper levels stay as decoded. The result's
        ``residual (B,)`` is each structure's remaining distance from the latent
        (:func:`geoae.model.latent_residual`): near zero, the decoding is very likely right.

        The decoder places each level's children to within its precision (about 0.1 A per
        level on QM9), and the errors add up; the encoder, given the decoded tree, tells the
        true structure apart much more finely (it maps onto ``latent`` exactly). Costs about
        ``3 * steps`` encoder passes.
        """
        return refine_decoding(self.encoder, latent, decoded, steps, lr, species_lr)

    def decode(self, latent: torch.Tensor, **options) -> list[ase.Atoms]:
        """Structures decoded from ``latent (B, latent_irreps.dim)``, centred on their centroid;
        ``options``: :meth:`decode_tensors`' refinement (``refine_steps``, ``candidates``,
        ``screen_steps``, ``rounds``, ``settled``, ``feedback_rounds``, ``feedback``)."""
        with torch.no_grad():
            out = self.decode_tensors(latent, **options)
        z = torch.tensor(self.species)[out.species.cpu()]  # (N,) atomic numbers
        return to_atoms(Data(pos=out.pos, z=z, batch=out.batch), out.num_structures)

    def reconstruct(self, structures: Structures, **options) -> list[ase.Atoms]:
        """``decode(encode(structures), **options)``, each moved back to its input's centroid."""
        batch = self.as_batch(structures)
        with torch.no_grad():
            decoded = self.decode(self.encode(batch), **options)
        centroids = scatter(batch.pos, batch.batch, dim=0, reduce="mean").double().cpu().numpy()
        for atoms, centroid in zip(decoded, centroids):
            atoms.positions += centroid
        return decoded

    # ------------------------------------------------------------------ training
    def loss(self, batch: Batch, **options) -> dict[str, torch.Tensor]:
        """Teacher-forced losses of ``batch``: :func:`geoae.model.teacher_forced_loss` (its
        keyword arguments as ``options``: noise, scheduled sampling, term weights)."""
        return teacher_forced_loss(self, batch, **options)
