"""Bundled example programs. Drop your own ``dspy.Module`` classes into this directory."""

from typing import Literal

import dspy


class QA(dspy.Module):
    """Answer a question in one step (sync: runs in the worker pool)."""

    def __init__(self) -> None:
        super().__init__()
        self.predict = dspy.Predict("question -> answer")

    def forward(self, question: str) -> dspy.Prediction:
        return self.predict(question=question)


class AsyncQA(dspy.Module):
    """Answer a question with reasoning, natively on the event loop (defines ``aforward``)."""

    def __init__(self) -> None:
        super().__init__()
        self.think = dspy.ChainOfThought("question -> answer")

    def forward(self, question: str) -> dspy.Prediction:
        return self.think(question=question)

    async def aforward(self, question: str) -> dspy.Prediction:
        return await self.think.acall(question=question)


class ClassifySentiment(dspy.Module):
    """Classify the sentiment of a text, with an optional list of hint words."""

    def __init__(self) -> None:
        super().__init__()
        self.classify = dspy.Predict(
            dspy.Signature(
                {
                    "text": (str, dspy.InputField()),
                    "hints": (list[str], dspy.InputField()),
                    "sentiment": (Literal["positive", "negative", "neutral"], dspy.OutputField()),
                    "confidence": (float, dspy.OutputField()),
                }
            )
        )

    async def aforward(self, text: str, hints: list[str] | None = None) -> dspy.Prediction:
        return await self.classify.acall(text=text, hints=hints or [])

    def forward(self, text: str, hints: list[str] | None = None) -> dspy.Prediction:
        return self.classify(text=text, hints=hints or [])


class DescribeImage(dspy.Module):
    """Answer a question about an image: its URL or a data: URI (the playground also takes a file)."""

    def __init__(self) -> None:
        super().__init__()
        self.look = dspy.Predict(
            dspy.Signature(
                {
                    "image": (dspy.Image, dspy.InputField()),
                    "question": (str, dspy.InputField()),
                    "answer": (str, dspy.OutputField()),
                }
            )
        )

    async def aforward(
        self, image: dspy.Image, question: str = "What is in this picture?"
    ) -> dspy.Prediction:
        return await self.look.acall(image=image, question=question)

    def forward(self, image: dspy.Image, question: str = "What is in this picture?") -> dspy.Prediction:
        return self.look(image=image, question=question)
