"""Triton python-backend model: the tokenizer step of every text-in model (``<form>_text`` ensembles).

Generated into ``build/repository-*/tokenizer/1/model.py`` by ``tritonserving.repository``, next to the
exported ``tokenizer.json`` and ``input_checks.py`` (the request rules, shared with the client). Input
``text``: BYTES ``[batch, 1]``, one UTF-8 string a row; outputs ``input_ids`` and ``attention_mask``: INT64
``[batch, longest]``, padded to the longest string of the same request, which the ensemble hands to the form.

Every request stands on its own: each is checked before the dynamic batcher's requests are tokenised together,
and a bad one (an empty string, bytes that are not UTF-8) gets its own one-line error naming the row, while
the valid ones of the same ``execute`` are answered. Strings longer than ``max_length`` tokens (config
parameter; 256, sentence-transformers' ``max_seq_length``) are truncated to their first ``max_length`` tokens.
"""

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from input_checks import INPUT_NAMES, TEXT_INPUT, text_problem  # noqa: E402 - copied next to this file


def _error(message):
    """A failed response with a one-line message (the request fails, the model keeps serving)."""
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))


def pad(encodings, pad_id):
    """``(ids, mask)`` INT64 ``[len(encodings), longest]``, right-padded with ``pad_id`` / 0."""
    seq = max(len(e.ids) for e in encodings)
    ids = np.full((len(encodings), seq), pad_id, np.int64)
    mask = np.zeros((len(encodings), seq), np.int64)
    for row, enc in enumerate(encodings):
        ids[row, : len(enc.ids)] = enc.ids
        mask[row, : len(enc.ids)] = enc.attention_mask
    return ids, mask


class TritonPythonModel:
    """Loads ``tokenizer.json`` once per instance; ``execute`` tokenises every valid string in one call."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = os.path.join(args["model_repository"], args["model_version"], "tokenizer.json")
        self.tokenizer = Tokenizer.from_file(path)
        # padding is ours (per request); the file may carry its own truncation/padding settings
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(int(params["max_length"]))
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0

    def execute(self, requests):
        responses = [None] * len(requests)
        good = []  # (request index, its strings)
        for i, request in enumerate(requests):
            items = pb_utils.get_input_tensor_by_name(request, TEXT_INPUT).as_numpy().reshape(-1).tolist()
            problem = text_problem(items)
            if problem:
                responses[i] = _error(problem)
            else:
                good.append((i, [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in items]))
        if not good:
            return responses
        encodings = self.tokenizer.encode_batch([s for _, strings in good for s in strings])
        at = 0
        for i, strings in good:
            ids, mask = pad(encodings[at : at + len(strings)], self.pad_id)
            at += len(strings)
            tensors = [pb_utils.Tensor(name, arr) for name, arr in zip(INPUT_NAMES, (ids, mask), strict=True)]
            responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
        return responses

    def finalize(self):
        self.tokenizer = None
