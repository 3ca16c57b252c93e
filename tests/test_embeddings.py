"""Embeddings: lmbench.embed through the cached engine, /v1/embeddings with the real ``openai`` client, and the
semantic metrics built on them."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import openai
import pytest
from conftest import TEST_MODEL

import lmbench
from lmbench import scores
from lmbench.serve import Server, Settings

CAT, CAT_TOO, MARKETS = "The cat sat on the mat.", "A cat is sitting on a rug.", "Stock prices fell sharply today."


def test_embed_gives_normalised_vectors_that_place_paraphrases_closer() -> None:
    vectors = lmbench.embed([CAT, CAT_TOO, MARKETS], model="smollm2-135m-instruct")  # the default model
    assert vectors.shape == (3, 576) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2], "a paraphrase is closer than another topic"
    alone = lmbench.embed(CAT, model="smollm2-135m-instruct")
    assert np.allclose(alone, vectors[:1], atol=1e-5), "one text or a batch: the same vector"
    (engine,) = lmbench.loaded()
    assert lmbench.generate("Once upon a time", model=engine, max_tokens=3).completion_tokens == 3, "one engine"
    with pytest.raises(lmbench.ParameterError, match="non-empty list"):
        lmbench.embed([])


def test_semantic_metrics() -> None:
    run = lmbench.generate("Once upon a time", model=TEST_MODEL, max_tokens=8, seed=1)
    assert np.isnan(scores.semantic_similarity(run)), "no reference"
    run.item = {"reference": run.text}
    assert scores.semantic_similarity(run) == pytest.approx(1.0, abs=1e-5)
    assert lmbench.metrics.available()["semantic_diversity"].kind == "group"
    same, varied = scores.semantic_diversity([CAT, CAT]), scores.semantic_diversity([CAT, MARKETS])
    assert same == pytest.approx(0.0, abs=1e-5) and varied > same


@pytest.fixture
def client() -> Iterator[openai.OpenAI]:
    with Server(Settings(model=str(TEST_MODEL)), port=0) as server:
        yield openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_openai_client_embeddings(client: openai.OpenAI) -> None:
    expected = lmbench.embed([CAT, MARKETS], model=TEST_MODEL)
    answer = client.embeddings.create(model="stories260K", input=[CAT, MARKETS])  # the client asks for base64
    assert [d.index for d in answer.data] == [0, 1] and answer.model == "stories260K"
    assert np.allclose([d.embedding for d in answer.data], expected, atol=1e-5)
    floats = client.embeddings.create(model="stories260K", input=CAT, encoding_format="float")
    assert np.allclose(floats.data[0].embedding, expected[0], atol=1e-5)
    assert floats.usage.prompt_tokens == len(lmbench.tokenize(CAT, model=TEST_MODEL))
    tokens = lmbench.tokenize(CAT, model=TEST_MODEL)  # with the BOS that a text gets
    by_tokens = client.embeddings.create(model="stories260K", input=[tokens], encoding_format="float")
    assert np.allclose(by_tokens.data[0].embedding, expected[0], atol=1e-5)
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="stories260K", input=CAT, dimensions=8)
    assert caught.value.body["param"] == "dimensions" and "64 dimensions" in caught.value.body["message"]
    assert lmbench.runs().empty, "embeddings are not runs"
