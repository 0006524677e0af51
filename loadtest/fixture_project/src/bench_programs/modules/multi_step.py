"""Two predictors in sequence: two LM calls per request (async, with a sync twin)."""

import dspy


class MultiStep(dspy.Module):
    """Draft an answer, then refine it from the question and the draft (two LM calls)."""

    def __init__(self) -> None:
        super().__init__()
        self.draft = dspy.Predict("question: str -> draft: str")
        # The question comes first: the mock LLM echoes the first input field, so the final
        # answer still names the request it belongs to.
        self.refine = dspy.Predict("question: str, draft: str -> answer: str")

    def forward(self, question: str) -> dspy.Prediction:
        draft = self.draft(question=question).draft
        return self.refine(question=question, draft=draft)

    async def aforward(self, question: str) -> dspy.Prediction:
        draft = (await self.draft.acall(question=question)).draft
        return await self.refine.acall(question=question, draft=draft)
