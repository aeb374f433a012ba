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


# What each button/reaction action is called where members read it.
ACTIONS = {"reroll": "re-roll", "vary": "variation", "upscale": "upscale", "left": "extension to the left",
           "right": "extension to the right", "up": "extension upwards", "down": "extension downwards",
           "inpaint": "inpainting", "outpaint": "outpainting", "interpolate": "animation"}


def queued(job_id: int, ahead: int, notes: tuple[str, ...] = ()) -> str:
    if ahead == 0:
        text = f"🎨 Job {job_id} is next: starting shortly…"
    else:
        jobs = "job" if ahead == 1 else "jobs"
        text = f"🎨 Job {job_id} is queued: {ahead} {jobs} ahead of yours."
    return "\n".join((text, *(f"ℹ️ {note}" for note in notes)))


def mode_details(request: GenerateRequest) -> list[str]:
    """What a mode did, in a few words for the summary line."""
    strength = request.denoising_strength
    if request.mode == "img2img":
        return [f"img2img, strength {strength:g}"]
    if request.mode == "inpaint":
        return [f"inpainting, strength {strength:g}"]
    if request.mode == "outpaint":
        side = "every side" if request.direction == "all" else request.direction
        return [f"outpainted {request.amount} px {side}"]
    if request.mode == "upscale":
        return ["upscaled 2×"]  # by SD_UPSCALER, or img2img at a strength the PNG records
    if request.mode == "interpolate":
        return [f"{request.frames} frames"]
    return []


def summary(job_id: int, request: GenerateRequest, result: GenerateResult, *, origin: str = "",
            notes: tuple[str, ...] = ()) -> str:
    """Prompt, negative prompt and every parameter needed to make the same image again.
    `origin` says where the job came from ("variation of job 12"), `notes` what was done to inputs."""
    shown = [image for image in result.images if not image.nsfw_content_detected]
    withheld = len(result.images) - len(shown)
    seeds = ", ".join(str(image.seed) for image in shown) if shown else str(result.seed)
    if request.mode == "interpolate":
        end_seed = result.seed if request.end_seed is None else request.end_seed
        seeds = f"{result.seed} → {end_seed}"
    details = " · ".join(
        [
            *([origin] if origin else []),  # our own words
            *mode_details(request),
            *([f"Style {escape(request.style)}"] if request.style else []),
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
    notice = "".join(f"\nℹ️ {escape(note)}" for note in notes)
    if withheld:
        notice += f"\n🚫 {withheld} of {len(result.images)} images withheld by the safety filter."
    room = MESSAGE_LIMIT - len(details) - len(notice) - 60
    negative = request.negative_prompt
    end = request.end_prompt if request.mode == "interpolate" and request.end_prompt not in (None, request.prompt) else ""
    shares = 1 + bool(negative) + bool(end)
    prompt_room = room // shares
    lines = [f"**{_clip(escape(request.prompt), prompt_room)}**"]
    if end:
        lines[0] += f" → **{_clip(escape(end), prompt_room)}**"
    if negative:
        lines.append(f"Negative: {_clip(escape(negative), prompt_room)}")
    lines.append(details)
    return "\n".join(lines) + notice


def all_withheld(job_id: int, count: int) -> str:
    if count == 1:
        return f"🚫 The image of job {job_id} was withheld by the safety filter."
    return f"🚫 All {count} images of job {job_id} were withheld by the safety filter."


def failed(job_id: int) -> str:
    return f"😿 Sorry, something went wrong while making job {job_id}. It has been logged; please try again."


def undeliverable(job_id: int) -> str:
    return (f"😿 Job {job_id} is done, but Discord refused to take the picture (probably too large). "
            "Try fewer frames or a smaller size.")


def crashed(job_id: int) -> str:
    return (
        f"😿 Sorry, the image engine crashed while making job {job_id}. "
        "It is being restarted; please try again in a moment."
    )


def engine_unavailable(job_id: int, reason: str) -> str:
    return f"😿 Sorry, the image engine is not available right now (job {job_id}): {reason}"


def info(job, *, origin: str = "") -> str:
    """Everything about a job that someone needs to make it again (`job` is a store.JobRow)."""
    request = job.request()
    lines = [f"**Job {job.id}** by <@{job.user_id}> · {job.status} · {job.created_at[:19].replace('T', ' ')} UTC"]
    if origin:
        lines.append(origin)
    said = "Prompt (the style's words included)" if job.style else "Prompt"
    lines.append(f"{said}: {_clip(escape(job.prompt), 700)}")
    if job.negative_prompt:
        lines.append(f"Negative: {_clip(escape(job.negative_prompt), 500)}")
    if job.mode == "interpolate" and job.end_prompt:
        lines.append(f"End prompt: {_clip(escape(job.end_prompt), 300)}")
    parts = [
        f"Mode {job.mode}", *mode_details(request)[:1],
        *([f"Style {escape(job.style)}"] if job.style else []),
        f"Seed {job.seed}" + (f" (image i uses {job.seed} + i)" if job.num_images > 1 else ""),
        *([f"End seed {job.end_seed}"] if job.mode == "interpolate" and job.end_seed is not None else []),
        f"{job.num_inference_steps} steps", f"CFG {job.guidance_scale:g}", job.scheduler,
        *([f"{job.width}×{job.height}"] if job.width else []),
        *([f"{job.num_images} images"] if job.num_images > 1 else []),
        *([escape(job.model)] if job.model else []),
        *([f"{job.engine_seconds:.1f} s"] if job.engine_seconds is not None else []),
    ]
    lines.append(" · ".join(parts))
    if job.error:
        lines.append(f"Error: {_clip(escape(job.error), 300)}")
    return _clip("\n".join(lines), MESSAGE_LIMIT)


def origin(action: str, parent_job_id: int | None, index: int | None = None) -> str:
    """Where a job came from: "variation of job 12, image 2"."""
    if parent_job_id is None or action not in ACTIONS:
        return ""
    image = f", image {index + 1}" if index is not None else ""
    return f"{ACTIONS[action]} of job {parent_job_id}{image}"
