"""The geometric autoencoder and its pieces: hierarchy, encoder, bloom head, decoder, training loss."""

from ._autoencoder import Autoencoder
from ._bloom import BloomHead, QuadraticLinear
from ._checkpoint import CHECKPOINT_KEY, PRETRAINED, load, save
from ._decoder import CHILD_COUNTS, BloomPrediction, Decoded, Decoder, flipped_counts, merge_duplicates
from ._encoder import Combine, Encoder
from ._hierarchy import Hierarchy, build_hierarchy, num_levels_for
from ._loss import moved_hierarchy, teacher_forced_loss
from ._own import with_decoded_positions
from ._refine import decoded_hierarchy, decoded_tree, feedback_latent, latent_residual, refine_decoding
from ._select import regroup_structures, select_structures, take_structures

__all__ = [
    "Autoencoder",
    "BloomHead",
    "BloomPrediction",
    "CHECKPOINT_KEY",
    "CHILD_COUNTS",
    "Combine",
    "Decoded",
    "Decoder",
    "Encoder",
    "Hierarchy",
    "PRETRAINED",
    "QuadraticLinear",
    "build_hierarchy",
    "decoded_hierarchy",
    "decoded_tree",
    "feedback_latent",
    "flipped_counts",
    "latent_residual",
    "load",
    "merge_duplicates",
    "moved_hierarchy",
    "num_levels_for",
    "refine_decoding",
    "regroup_structures",
    "save",
    "select_structures",
    "take_structures",
    "teacher_forced_loss",
    "with_decoded_positions",
]
