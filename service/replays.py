"""`flowctl dlq replay`: replay dead letters and say what became of each.

Each copy asks for an answer (direct reply-to, a correlation id of its own); once every
copy is answered, or the wait is over, the dead-letter queue is read for the copies
that died again: a new letter keeps the copy's correlation id, whether a worker or the
broker wrote it.
"""

from datetime import timedelta

from contracts import Reply
from service.adapters.amqp.answers import Answers, ReplayOutcome
from service.adapters.amqp.deadletters import DeadLetter, Selection
from service.operations import EVERY_LETTER, Target, dead_letters


async def replay_letters(
    target: Target, wanted: "Selection", *, dry_run: bool, within: timedelta
) -> list["ReplayOutcome"]:
    """Replay the letters `wanted` selects and say what became of each.

    Each copy asks for an answer; once every copy is answered (or `within` has
    passed), the dead-letter queue is read for the copies that died again (a new
    letter keeps the copy's correlation id, whether a worker or the broker wrote it).
    """
    async with dead_letters(target) as queue:
        answers = Answers()
        reply_to = None if dry_run else await answers.listen(queue.channel)
        done = await queue.replay(wanted, dry_run=dry_run, reply_to=reply_to)
        if dry_run:
            return [ReplayOutcome(letter, "would replay") for letter in done.replayed]
        await answers.wait(done.correlation_ids, within=within)
        got = answers.received
        doubtful = {t for t in done.correlation_ids if t not in got or not got[t].ok}
        again: dict[str, DeadLetter] = {}
        if doubtful:
            for letter in (await queue.browse(EVERY_LETTER))[0]:
                token = letter.properties.get("correlation_id")
                if isinstance(token, str) and token in doubtful:
                    again[token] = letter
    outcomes = [
        _outcome(letter, got.get(token), again.get(token), within=within)
        for letter, token in zip(done.replayed, done.correlation_ids, strict=True)
    ]
    outcomes.extend(
        ReplayOutcome(letter, "not replayed", problem)
        for letter, problem in done.failed
    )
    return outcomes


def _outcome(
    letter: DeadLetter,
    reply: Reply | None,
    died: DeadLetter | None,
    *,
    within: timedelta,
) -> ReplayOutcome:
    if died is not None:
        why = f"{died.reason or '?'}: {died.detail}" if died.detail else died.reason
        return ReplayOutcome(letter, "dead-lettered again", why or "")
    if reply is None:
        waited = f"{within.total_seconds():g} s"
        return ReplayOutcome(letter, "replayed", f"no answer within {waited}")
    answer = f"{reply.status}: {reply.message}" if reply.message else reply.status
    if reply.run_id:
        answer += f" (run {reply.run_id})"
    return ReplayOutcome(letter, "replayed", answer)
