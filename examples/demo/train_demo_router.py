"""Train the DEMO router of `make run`: prompt text → which demo model should answer.

A toy on a dozen hand-written prompts (hard questions to the stronger model, chit-chat to the cheaper one),
so the local pod has a real scikit-learn Pipeline to download, verify and swap. Real routers are trained on
real data by the MLOps loop.

    python examples/demo/train_demo_router.py OUT.pkl [--flip]   (--flip: a v2 that answers the other way)
"""

from __future__ import annotations

import argparse
from pathlib import Path

PROMPTS = {
    "claude-3-haiku": [
        "Prove that the square root of two is irrational",
        "Solve the integral of x squared times sine x",
        "Write a Python function that merges two sorted lists",
        "Explain the proof of the central limit theorem",
        "Derive the gradient of the softmax cross-entropy loss",
        "What is the time complexity of Dijkstra's algorithm and why",
    ],
    "gpt-4o-mini": [
        "Hello, how are you today",
        "Tell me a joke about cats",
        "What is a good name for a dog",
        "Say hi to my friend",
        "Give me a fun fact",
        "What's the weather usually like in spring",
    ],
}


def train(out: Path, flip: bool) -> None:
    import joblib
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    names = list(PROMPTS)
    texts = [t for name in names for t in PROMPTS[name]]
    labels = [name for name in names for _ in PROMPTS[name]]
    if flip:
        labels = [names[1] if label == names[0] else names[0] for label in labels]
    pipeline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression(C=10.0))
    pipeline.fit(texts, labels)
    joblib.dump(pipeline, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--flip", action="store_true")
    args = parser.parse_args()
    train(args.out, args.flip)


if __name__ == "__main__":
    main()
