"""What members read: the text of queued, finished and failed jobs. Plain strings, no Discord objects."""

from __future__ import annotations

from dreambot.protocol import GenerateRequest, GenerateResult

MESSAGE_LIMIT = 2000


def escape(text: str) -> str:
    """Markdown-inert text (prompts are shown, never interpreted)."""
    out = text.replace("\\", "\\\\")
    for char in "*_~`|>#[]()-":
        out = out.replace(char, "\\" + char)
    return out.replace("@", "@\u200b")


def _clip(text: str, most: int) -> str:
    return text if len(text) <= most else text[: max(most - 1, 0)] + "…"


def queued(job_id: int, ahead: int) -> str:
    if ahead == 0:
        return f"🎨 Job {job_id} is next: starting shortly…"
    jobs = "job" if ahead == 1 else "jobs"
    return f"🎨 Job {job_id} is queued: {ahead} {jobs} ahead of yours."


def summary(job_id: int, request: GenerateRequest, result: GenerateResult) -> str:
    """Prompt, negative prompt and every parameter needed to make the same image again."""
    shown = [image for image in result.images if not image.nsfw_content_detected]
    withheld = len(result.images) - len(shown)
    seeds = ", ".join(str(image.seed) for image in shown) if shown else str(result.seed)
    details = " · ".join(
        [
            f"Seed {seeds}",
            f"{request.num_inference_steps} steps",
            f"CFG {request.guidance_scale:g}",
            request.scheduler,
            f"{result.width}×{result.height}",
            escape(result.model),
            f"{result.timings.get('total', 0):.1f} s",
            f"job {job_id}",
        ]
    )
    notice = ""
    if withheld:
        notice = f"\n🚫 {withheld} of {len(result.images)} images withheld by the safety filter."
    room = MESSAGE_LIMIT - len(details) - len(notice) - 40
    negative = request.negative_prompt
    prompt_room = room if not negative else room * 2 // 3
    lines = [f"**{_clip(escape(request.prompt), prompt_room)}**"]
    if negative:
        lines.append(f"Negative: {_clip(escape(negative), room - prompt_room)}")
    lines.append(details)
    return "\n".join(lines) + notice


def all_withheld(job_id: int, count: int) -> str:
    if count == 1:
        return f"🚫 The image of job {job_id} was withheld by the safety filter."
    return f"🚫 All {count} images of job {job_id} were withheld by the safety filter."


def failed(job_id: int) -> str:
    return f"😿 Sorry, something went wrong while making job {job_id}. It has been logged; please try again."


def crashed(job_id: int) -> str:
    return (
        f"😿 Sorry, the image engine crashed while making job {job_id}. "
        "It is being restarted; please try again in a moment."
    )


def engine_unavailable(job_id: int, reason: str) -> str:
    return f"😿 Sorry, the image engine is not available right now (job {job_id}): {reason}"
