"""The sync case: ``forward`` only, so a server must run it in a worker thread."""

import dspy


class SimplePredict(dspy.Module):
    """Answer a question with one Predict call (sync)."""

    def __init__(self) -> None:
        super().__init__()
        self.predict = dspy.Predict("question: str -> answer: str")

    def forward(self, question: str) -> dspy.Prediction:
        return self.predict(question=question)
