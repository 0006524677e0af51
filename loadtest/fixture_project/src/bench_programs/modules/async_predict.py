"""The native async case: ``aforward`` awaits the predictor, so it runs on the event loop."""

import dspy


class AsyncPredict(dspy.Module):
    """Answer a question with one Predict call (async)."""

    def __init__(self) -> None:
        super().__init__()
        self.predict = dspy.Predict("question: str -> answer: str")

    def forward(self, question: str) -> dspy.Prediction:
        return self.predict(question=question)

    async def aforward(self, question: str) -> dspy.Prediction:
        return await self.predict.acall(question=question)
