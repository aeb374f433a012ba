"""What members read: the text of queued, finished and failed jobs. Plain strings, no Discord objects."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.outcome import Failure, FailureKind
from dreambot.request import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS, GenerateRequest, Mode
from dreambot.wire import GenerateResult

MESSAGE_LIMIT = 2000


def escape(text: str) -> str:
    """Markdown-inert text (prompts are shown, never interpreted)."""
    out = text.replace("\\", "\\\\")
    for char in "*_~`|>#[]()-":
        out = out.replace(char, "\\" + char)
    return out.replace("@", "@\u200b")


def when(stamp: str, style: str = "f") -> str:
    """A stored UTC time ("2026-12-01T10:00:00.000Z") in Discord's timestamp markup, which each
    member's client shows in their own time zone and language: style "f" a date and time, "R"
    relative ("3 hours ago")."""
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return f"<t:{int(moment.timestamp())}:{style}>"


def clip(text: str, most: int = MESSAGE_LIMIT) -> str:
    return text if len(text) <= most else text[: max(most - 1, 0)] + "…"



# What each button/reaction action is called where members read it.
ACTIONS = {"reroll": "re-roll", "edit": "edit", "vary": "variation", "upscale": "upscale",
           "left": "extension to the left", "right": "extension to the right", "up": "extension upwards",
           "down": "extension downwards", "inpaint": "inpainting", "outpaint": "outpainting",
           "interpolate": "animation"}


# `queued`'s `starting` when every engine is a worker on another host and none is connected.
NO_WORKER = ""


def queued(job_id: int, ahead: int, wait: float | None = None, notes: tuple[str, ...] = (), *,
           restored: bool = False, starting: tuple[str, float | None] | None = None) -> str:
    """The notice while a job waits: its place in the queue and, when known, the estimated wait;
    during a cold start (`starting`: the model the engine loads, and about how long that has left),
    that the engine is loading it; with workers on other hosts and none connected (`starting`'s
    model is NO_WORKER), that it waits for one."""
    again = " again after a restart" if restored else ""
    if starting is not None and starting[0] == NO_WORKER:
        where = "is next" if ahead == 0 else f"is queued ({ahead} {'job' if ahead == 1 else 'jobs'} ahead)"
        text = (f"⏳ Job {job_id} {where}{again}: no image worker is connected right now; it starts as soon as "
                "one is.")
    elif ahead == 0 and starting is not None:
        model, left = starting
        about = "" if left is None else " (any moment now)" if left < 1 else f" (about {duration(left)})"
        text = (f"📦 Job {job_id} is next{again}: the image engine is starting, loading the model "
                f"{escape(model)}{about}…")
    elif ahead == 0:
        text = f"🎨 Job {job_id} is next{again}: starting shortly…"
    else:
        jobs = "job" if ahead == 1 else "jobs"
        text = f"🎨 Job {job_id} is queued{again}: {ahead} {jobs} ahead of yours"
        text += f", about {duration(wait)} to wait." if wait else "."
        if starting is not None:  # no countdown here: it would cost an edit of every waiting job's notice
            text += f"\n📦 The image engine is starting: loading the model {escape(starting[0])}."
    return "\n".join((text, *(f"ℹ️ {note}" for note in notes)))


def loading(job_id: int, model: str, seconds: float | None) -> str:
    """The notice while a job waits for the engine to load its model."""
    about = f" (about {duration(seconds)})" if seconds else ""
    return f"📦 Job {job_id}: loading the model {escape(model)}{about}; it starts right after."


BAR = 12  # cells of the progress bar


def bar(done: float) -> str:
    """A text progress bar, `done` from 0 to 1: ▰▰▰▱▱▱."""
    filled = min(BAR, max(0, int(done * BAR)))
    return "▰" * filled + "▱" * (BAR - filled)


def running(job_id: int, step: int, total: int, left: float | None) -> str:
    """The notice while a job runs: a bar with its share done and, once the pace is known, the time
    left. Steps are not counted out: a sampler may take more than were asked (Heun), and image-to-image
    runs only a strength's share of them, so a count would contradict the summary's."""
    done = step / total if total else 0.0
    if step >= total:
        after = "finishing"  # the decode and the safety check
    elif left is None:
        after = "starting"
    else:
        after = f"about {duration(left)} left"
    return f"🖌️ Job {job_id}: {bar(done)} {int(done * 100)} % · {after}"


def duration(seconds: float) -> str:
    seconds = max(1, round(seconds))
    return f"{seconds} s" if seconds < 90 else f"{round(seconds / 60)} min"


def cancelled(job_id: int, by: str) -> str:
    return f"🛑 Job {job_id} was {by}."


def timed_out(job_id: int, reason: str) -> str:
    return (f"⏱️ Job {job_id}: {reason}. Try fewer steps, a smaller size or fewer images.")


# The actions whose name already says which mode ran ("variation of job 12" is image-to-image).
NAMES_THE_MODE = {"vary": Mode.IMG2IMG, "inpaint": Mode.INPAINT, "outpaint": Mode.OUTPAINT, "left": Mode.OUTPAINT,
                  "right": Mode.OUTPAINT, "up": Mode.OUTPAINT, "down": Mode.OUTPAINT, "upscale": Mode.UPSCALE,
                  "interpolate": Mode.INTERPOLATE}


def mode_details(request: GenerateRequest, origin: str = "", *, named: bool = False) -> list[str]:
    """What a mode did, in a few words for the summary line; without the mode's name where it is
    said already: by `origin` ("inpainting of job 1 · strength 1", not "… · inpainting, strength 1"),
    or by the caller (`named`)."""
    named = named or any(origin.startswith(ACTIONS[action]) for action, mode in NAMES_THE_MODE.items()
                         if mode is request.mode)
    strength = request.denoising_strength
    if request.mode is Mode.IMG2IMG:
        return [f"strength {strength:g}" if named else f"img2img, strength {strength:g}"]
    if request.mode is Mode.INPAINT:
        return [f"strength {strength:g}" if named else f"inpainting, strength {strength:g}"]
    if request.mode is Mode.OUTPAINT:
        side = "every side" if request.direction == "all" else request.direction
        if origin.startswith("extension"):  # "extension to the left of job 1": the side is said too
            return [f"{request.amount} px"]
        return [f"{request.amount} px {side}" if named else f"outpainted {request.amount} px {side}"]
    if request.mode is Mode.UPSCALE:
        return ["2×" if named else "upscaled 2×"]  # by SD_UPSCALER, or img2img at a strength the PNG records
    if request.mode is Mode.INTERPOLATE:
        return [f"{request.frames} frames"]
    return []


def summary(job_id: int, request: GenerateRequest, result: GenerateResult, *, origin: str = "",
            notes: tuple[str, ...] = (), nsfw_mode: str = "block") -> str:
    """Prompt, negative prompt and every parameter needed to make the same image again.
    `origin` says where the job came from ("variation of job 12"), `notes` what was done to inputs,
    `nsfw_mode` what the channel's safety filter does with flagged images."""
    flagged = sum(image.nsfw_content_detected for image in result.images)
    shown = [image for image in result.images if not image.nsfw_content_detected or nsfw_mode != "block"]
    withheld = len(result.images) - len(shown)
    seeds = ", ".join(str(image.seed) for image in shown) if shown else str(result.seed)
    if request.mode is Mode.INTERPOLATE:
        end_seed = result.seed if request.end_seed is None else request.end_seed
        seeds = f"{result.seed} → {end_seed}"
    details = " · ".join(
        [
            *([origin] if origin else []),  # our own words
            *mode_details(request, origin),
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
    elif flagged and nsfw_mode == "spoiler":
        which = "This image was" if len(result.images) == 1 else f"{flagged} of {len(result.images)} images were"
        notice += f"\n⚠️ {which} flagged by the safety filter and posted behind a spoiler. Open at your discretion."
    room = MESSAGE_LIMIT - len(details) - len(notice) - 140
    negative = request.negative_prompt
    ends_elsewhere = request.mode is Mode.INTERPOLATE and request.end_prompt not in (None, request.prompt)
    end = request.end_prompt if ends_elsewhere else ""
    shares = 1 + bool(negative) + bool(end)
    prompt_room = room // shares
    if any(len(escape(text)) > prompt_room for text in (request.prompt, negative, end or "")):
        notice += f"\nℹ️ The prompts are cut short here; `/info job:{job_id}` gives them whole."
    lines = [f"**{clip(escape(request.prompt), prompt_room)}**"]
    if end:
        lines[0] += f" → **{clip(escape(end), prompt_room)}**"
    if negative:
        lines.append(f"Negative: {clip(escape(negative), prompt_room)}")
    lines.append(details)
    return "\n".join(lines) + notice


def all_withheld(job_id: int, count: int) -> str:
    if count == 1:
        return f"🚫 The image of job {job_id} was withheld by the safety filter."
    return f"🚫 All {count} images of job {job_id} were withheld by the safety filter."


def input_lost(job_id: int) -> str:
    return (f"😿 Job {job_id} could not run after the bot restarted: the picture it starts from could not be "
            "stored. Please run the command again.")


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


def engine_unavailable(job_id: int) -> str:
    """The engine is down or starting over after failing: why is the operator's (paths, errors), and
    goes to the log and the mod-log (`failure_detail`), never to the channel."""
    return f"😿 Sorry, the image engine is down (job {job_id}); moderators have been told."


def failure(job_id: int, failure: Failure) -> str:
    """What the channel reads when a job fails, for each kind of failure (the one place that says it)."""
    kind = failure.kind
    if kind is FailureKind.CANCELLED:
        return cancelled(job_id, failure.message)
    if kind is FailureKind.REFUSED:  # the channel reads no more than it may know; the member hears why
        return f"🚫 {failure.public or failure.message} (job {job_id})"
    if kind is FailureKind.UNAVAILABLE:
        return engine_unavailable(job_id)
    if kind is FailureKind.CRASHED:
        return crashed(job_id)
    if kind is FailureKind.TIMED_OUT:
        return timed_out(job_id, failure.message)
    if kind in (FailureKind.INVALID, FailureKind.OOM):  # the member's to fix: the engine's words
        return f"⚠️ {failure.message} (job {job_id})"
    return failed(job_id)


# The failures whose message is for the operator (a path, an exception, an exit code): members read
# an apology (`failure`), the failing job's server's moderators the message (`failure_detail`).
OPERATORS_FAILURES = (FailureKind.UNAVAILABLE, FailureKind.CRASHED, FailureKind.INTERNAL)
# What members read of a stored error (`shown_error`) whose kind's message is not theirs.
SHOWN_ERRORS = {FailureKind.UNAVAILABLE: "the image engine was down",
                FailureKind.CRASHED: "the image engine crashed while making it",
                FailureKind.INTERNAL: "something went wrong on our side"}


def failure_detail(job_id: int, failure: Failure) -> str:
    """What the mod-log reads when a job failed for an operator's reason: the reason itself."""
    what = {FailureKind.UNAVAILABLE: "the image engine is down", FailureKind.CRASHED: "the image engine crashed",
            FailureKind.INTERNAL: "something went wrong"}.get(failure.kind, str(failure.kind))
    return (f"⚠️ Job {job_id} failed: {what}. Members are told only that; the reason, for the bot's operator "
            f"(the bot's log has more): `{clip(failure.message, 1500).replace('`', 'ˋ')}`")


def engine_down(reason: str) -> str:
    """What every mod-log reads once when the engine failed to start twice the same way."""
    return ("🛑 The image engine is down: it failed to start twice in a row the same way, so it is not being "
            "restarted, and members' jobs fail at once with an apology. The bot's operator needs to fix the cause "
            f"and restart the bot. The reason: `{clip(reason, 1500).replace('`', 'ˋ')}`")


def shown_error(error: str, *, mine: bool = True) -> str:
    """A job's stored error (`kind: message`, `bot.queue`) as members may read it: the message where
    it is theirs (an invalid request, out of memory, a time limit, a refusal), else an apology for
    its kind. A refusal's reason (a ban, say) is the job's member's alone (`mine`): anyone else
    reads what the channel read. The stored error keeps the detail for the operator."""
    kind, _, message = error.partition(": ")
    try:
        known = FailureKind(kind)
    except ValueError:
        return error  # the bot's own words (a job the last run left: `JobQueue.abandon`)
    if known is FailureKind.REFUSED and not mine:
        return "stopped under this server's rules"
    return SHOWN_ERRORS.get(known, message or error)


# What /info shows of each prompt in its message; a longer one comes whole in a file (`prompts_file`).
INFO_PROMPT, INFO_NEGATIVE, INFO_END = 700, 500, 300


def prompts_clipped(job) -> bool:
    """Whether /info's message cannot hold the job's prompts whole."""
    request = job.request
    return (len(escape(request.prompt)) > INFO_PROMPT or len(escape(request.negative_prompt)) > INFO_NEGATIVE
            or len(escape(request.end_prompt or "")) > INFO_END)


def prompts_file(job) -> str:
    """The job's prompts in full, as plain text, for a file beside /info's message."""
    request = job.request
    parts = [f"Prompt: {request.prompt}", f"Negative prompt: {request.negative_prompt}"]
    if request.mode is Mode.INTERPOLATE and request.end_prompt:
        parts.append(f"End prompt: {request.end_prompt}")
    return "\n\n".join(parts) + "\n"


def info(job, *, origin: str = "", mine: bool = True) -> str:
    """Everything about a job that someone needs to make it again (`job` is a store.JobRow);
    `mine`: read by the job's own member (who alone reads why it was refused)."""
    request = job.request
    asked = f"{when(job.created_at)} ({when(job.created_at, 'R')})"
    lines = [f"**Job {job.id}** by <@{job.user_id}> · {job.status} · {asked}"]
    if origin:
        lines.append(origin)
    said = "Prompt (the style's words included)" if request.style else "Prompt"
    lines.append(f"{said}: {clip(escape(request.prompt), INFO_PROMPT)}")
    if job.prompt_chunks:
        chunks = "1 chunk" if job.prompt_chunks == 1 else f"{job.prompt_chunks} chunks"
        tokens = "1 token" if job.prompt_tokens == 1 else f"{job.prompt_tokens} tokens"
        lines.append(f"Read whole: {tokens}, in {chunks} of the text encoder's length")
    if request.negative_prompt:
        lines.append(f"Negative: {clip(escape(request.negative_prompt), INFO_NEGATIVE)}")
    interpolation = request.mode is Mode.INTERPOLATE
    if interpolation and request.end_prompt:
        lines.append(f"End prompt: {clip(escape(request.end_prompt), INFO_END)}")
    if prompts_clipped(job):
        lines.append("The prompts are too long for one message: they are in full in the attached file.")
    parts = [
        f"Mode {request.mode}", *mode_details(request, named=True),
        *([f"Style {escape(request.style)}"] if request.style else []),
        f"Seed {request.seed}" + (f" (image i uses {request.seed} + i)" if request.num_images > 1 else ""),
        *([f"End seed {request.end_seed}"] if interpolation and request.end_seed is not None else []),
        f"{request.num_inference_steps} steps", f"CFG {request.guidance_scale:g}", request.scheduler,
        *([f"{job.width}×{job.height}"] if job.width else []),
        *([f"{request.num_images} images"] if request.num_images > 1 else []),
        *([escape(job.model)] if job.model else []),
        *([f"{job.engine_seconds:.1f} s"] if job.engine_seconds is not None else []),
    ]
    lines.append(" · ".join(parts))
    if job.error:
        lines.append(f"Error: {clip(escape(shown_error(job.error, mine=mine)), 300)}")
    return clip("\n".join(lines), MESSAGE_LIMIT)


def origin(action: str, parent_job_id: int | None, index: int | None = None) -> str:
    """Where a job came from: "variation of job 12, image 2"."""
    if parent_job_id is None or action not in ACTIONS:
        return ""
    image = f", image {index + 1}" if index is not None else ""
    return f"{ACTIONS[action]} of job {parent_job_id}{image}"


# -- moderation: what moderators read in the mod-log ------------------------------------------------


def _where(channel) -> str:
    channel_id = getattr(channel, "id", None)
    return f"<#{channel_id}>" if channel_id else "a direct message"


def prompt_refused(user_id: int, channel, request: GenerateRequest, term) -> str:
    """A prompt the filter refused: who, where, which term (moderators only) and the prompt."""
    what = "word" if term.kind == "word" else "pattern"
    lines = [f"🛑 A prompt by <@{user_id}> in {_where(channel)} was refused: it matched the blocked {what} "
             f"`{term.text.replace('`', 'ˋ')}`.", f"> {clip(escape(request.prompt), 900)}"]
    if request.negative_prompt:
        lines.append(f"Negative: {clip(escape(request.negative_prompt), 400)}")
    if request.end_prompt:
        lines.append(f"End prompt: {clip(escape(request.end_prompt), 400)}")
    return "\n".join(lines)


FLAGGED_OUTCOME = {"block": "withheld (never uploaded)", "spoiler": "posted behind a spoiler",
                   "off": "posted as is (the channel's filter is off)"}


def flagged(job_id: int, user_id: int, channel, result: GenerateResult, nsfw_mode: str) -> str:
    """A job whose images the safety classifier flagged (the image itself is never in the mod-log)."""
    scores = [image.nsfw_score for image in result.images if image.nsfw_content_detected]
    count = "its image" if len(result.images) == 1 else f"{len(scores)} of its {len(result.images)} images"
    source = "" if result.source_score is None else f", the picture it started from {result.source_score:g}"
    return (f"🚩 Job {job_id} by <@{user_id}> in {_where(channel)}: the safety filter flagged {count} "
            f"(score {', '.join(f'{score:g}' for score in scores)}{source}); {FLAGGED_OUTCOME[nsfw_mode]}.")


def setting_changed(actor_id: int, what: str, old, new) -> str:
    def shown(value) -> str:
        return "(none)" if value is None else str(value)

    return f"⚙️ <@{actor_id}> changed {what}: {shown(old)} → {shown(new)}."


# -- history and privacy ------------------------------------------------------------------------


def jump_link(job) -> str:
    if job.message_id is None or job.channel_id is None:
        return ""
    return f"https://discord.com/channels/{job.guild_id or '@me'}/{job.channel_id}/{job.message_id}"


def history(jobs, *, total: int, page: int, pages: int, whose: str) -> str:
    """One page of a member's jobs (store.JobRow), each with its status, parameters and a jump link."""
    if not total:
        return f"{whose} Dreambot history is empty."
    lines = [f"**{whose} Dreambot history** · {total} job{'s' if total != 1 else ''} · page {page + 1} of {pages}"]
    for job in jobs:
        status = job.shown_status
        link = jump_link(job)
        head = f"**Job {job.id}** · {status} · {when(job.created_at, 'R')}"
        if link and not job.deleted_at:
            head += f" · [jump to it]({link})"
        size = f" · {job.width}×{job.height}" if job.width else ""
        request = job.request
        lines += ["", head, f"> {clip(escape(request.prompt), 120)}",
                  f"{request.mode} · seed {request.seed} · {request.num_inference_steps} steps · "
                  f"CFG {request.guidance_scale:g} · {request.scheduler}{size}"]
        if job.error:
            lines.append(f"Error: {clip(escape(shown_error(job.error)), 80)}")
    return clip("\n".join(lines), MESSAGE_LIMIT)


def adapter_entry(adapter, off: set[tuple[str, str]]) -> str:
    """One installed LoRA or embedding (dreambot.adapters.Adapter) for /loras: how to use it, and its
    description and trigger words when its file has them; or that this server turned it off."""
    kind = "LoRA" if adapter.kind == "lora" else "embedding"
    head = f"**{escape(adapter.name)}** ({kind})"
    if (adapter.kind, adapter.name.lower()) in off:
        return f"{head} · turned off in this server"
    use = f"`<lora:{adapter.name}:1>` in the prompt, or the lora option" if adapter.kind == "lora" else \
        f"the word `{adapter.name}` in the prompt or negative prompt"
    lines = [f"{head} · {use}"]
    if adapter.description:
        lines.append(f"> {clip(escape(adapter.description), 150)}")
    if adapter.triggers:
        lines.append("Trigger words: " + ", ".join(f"`{clip(t, 40).replace('`', 'ˋ')}`" for t in adapter.triggers))
    return "\n".join(lines)


def adapters(entries: list[str], *, total: tuple[int, int], page: int, pages: int) -> str:
    """One page of /loras: its entries (`adapter_entry`), under a line that counts them all."""
    loras, embeddings = total
    if not loras and not embeddings:
        return ("No LoRAs or embeddings are installed. The bot's operator can add LoRA files to `LORA_DIR` and "
                "embedding files to `EMBEDDINGS_DIR`.")
    head = (f"**LoRAs and embeddings** · {loras} LoRA{'s' if loras != 1 else ''}, {embeddings} "
            f"embedding{'s' if embeddings != 1 else ''} · page {page + 1} of {pages}")
    return clip("\n\n".join([head, *entries]), MESSAGE_LIMIT)


def forget_question(total: int, settings: bool = False) -> str:
    jobs = "1 job" if total == 1 else f"{total} jobs"
    yours = " and your own defaults (/settings)" if settings else ""
    return (f"⚠️ Erase your Dreambot history? This deletes your {jobs} (in every server), every picture "
            f"Dreambot stored for them{yours}, and cannot be undone. Buttons on your old results will stop working. "
            "Messages already posted stay where they are: delete them first with their 🗑️ button if you want "
            "them gone.")


def forgotten(jobs: int, files: int, in_progress: int) -> str:
    text = (f"🧹 Erased {jobs} job{'s' if jobs != 1 else ''}, {files} stored picture{'s' if files != 1 else ''} "
            "and your settings.")
    if in_progress:
        were = "were" if in_progress != 1 else "was"
        text += (f" {in_progress} job{'s are' if in_progress != 1 else ' is'} still being made and {were} kept; "
                 "run /forget again once they are done.")
    return text


AUDITED = {"filter.mode": "safety filter mode", "filter.threshold": "safety threshold", "modlog": "mod-log channel",
           "moderator_role": "moderator role", "words.add": "blocked", "words.remove": "unblocked",
           "ban": "barred", "unban": "let back", "adapters.off": "turned off", "adapters.on": "turned on",
           "model.default": "default model", "model.allowed": "models allowed"}


def audit(rows) -> str:
    """The latest moderation changes (store.AuditRow), newest first."""
    if not rows:
        return "No moderation changes were made in this server yet."
    lines = ["**Latest moderation changes**"]
    for row in rows:
        target = f" {escape(row.target)}" if row.target else ""
        if row.action in ("words.add", "words.remove"):  # the term itself, as code
            change = f"`{(row.new_value or row.old_value or '').replace('`', 'ˋ')}`"
        elif row.action in ("modlog", "moderator_role"):  # ids, shown as mentions
            mention = "<#{}>" if row.action == "modlog" else "<@&{}>"
            change = " → ".join(mention.format(v) if v else "(none)" for v in (row.old_value, row.new_value))
        else:
            change = escape(f"{row.old_value or '(none)'} → {row.new_value or '(none)'}")
        lines.append(f"{when(row.created_at, 'R')} · <@{row.actor_id}> · "
                     f"{AUDITED.get(row.action, row.action)}{target}: {clip(change, 200)}")
    return clip("\n".join(lines), MESSAGE_LIMIT)


def models_list(catalogue, holding: set[str], place, limit: int = MESSAGE_LIMIT) -> str:
    """/models: each model a member may use here, with its family, native size and default steps,
    and whether an engine holds it now."""
    lines = ["🖼️ **Models**: pick one with the `model` option, or make one yours with `/settings`."]
    shown = 0
    models = [model for model in catalogue if place.allows(model.name)]
    for model in models:
        width, height = model.size
        size = f"{width}×{height}" if width and height else "native size"
        parts = [f"**{escape(model.name)}**" + (f" — {escape(model.title)}" if model.title else ""),
                 model.family_label or "family unknown until loaded", size,
                 f"{model.defaults.steps or DEFAULT_STEPS} steps",
                 "loaded now" if model.name.lower() in holding else "loads when first used"]
        if model.name == catalogue.default:
            parts.append("the default")
        line = "• " + " · ".join(parts)
        if model.description:
            line += f"\n  {escape(clip(model.description, 150) or '')}"
        if len("\n".join(lines)) + len(line) + 60 > limit:
            break
        lines.append(line)
        shown += 1
    if shown < len(models):
        lines.append(f"…and {len(models) - shown} more: type part of a name in the `model` option.")
    if place.allowed is not None:
        lines.append(f"This channel allows only these; others: {len(catalogue) - len(models)}.")
    return "\n".join(lines)


def model_settings(settings, channels: dict, catalogue) -> str:
    """/mod model list: the server's default model, and each channel's default and allowed models."""
    lines = [f"Default model of this server: **{escape(settings.model or catalogue.default)}**"
             + ("" if settings.model else " (the bot's)")]
    for channel_id, own in sorted(channels.items()):
        parts = []
        if own.model:
            parts.append(f"default {escape(own.model)}")
        if own.allowed is not None:
            parts.append("allows " + (", ".join(escape(name) for name in own.allowed) or "no model"))
        lines.append(f"• <#{channel_id}>: " + "; ".join(parts))
    if not channels:
        lines.append("No channel has settings of its own: every channel allows every model.")
    return "\n".join(lines)


def member_settings(member, model, own_model, size: tuple[int | None, int | None], defaults) -> str:
    """The /settings panel: each of the member's defaults, or what applies instead and from where."""
    def shown(value, instead: str) -> str:
        return f"**{escape(str(value))}** (yours)" if value is not None else instead

    width, height = size
    size_text = f"{width}×{height}" if width and height else "the model's native size"
    if member.aspect:
        size_text = f"**{member.aspect}** (yours): {size_text} on {escape(model.name)}"
    elif member.width or member.height:
        size_text = f"**{size_text}** (yours)"
    else:
        size_text += " (the model's)"
    model_text = f"**{escape(model.label)}**" + (" (yours)" if own_model is not None and own_model.name == model.name
                                                 else " (this channel's or server's default)")
    if own_model is not None and own_model.name != model.name:
        model_text += f"; yours, {escape(own_model.name)}, is not used in this channel"
    def default(own, built_in) -> str:
        return f"{own:g} (the model’s)" if isinstance(own, float) else f"{own} (the model’s)" if own is not None \
            else f"{built_in:g}" if isinstance(built_in, float) else str(built_in)

    negative = shown(member.negative and clip(member.negative, 200),
                     escape(clip(defaults.negative_prompt or "", 200)) or "none")
    lines = [
        "⚙️ **Your defaults**, used wherever a command's options say nothing (a channel may limit the models):",
        f"• Model: {model_text}",
        f"• Sampler: {shown(member.sampler, default(defaults.sampler, DEFAULT_SAMPLER))}",
        f"• Steps: {shown(member.steps, default(defaults.steps, DEFAULT_STEPS))}",
        f"• Guidance: {shown(member.guidance, default(defaults.guidance, DEFAULT_GUIDANCE))}",
        f"• Size: {size_text}",
        f"• Style: {shown(member.style, 'none')}",
        f"• Negative prompt: {negative}",
        "Change them below, or with `/settings` options (width, height, negative…). `/forget` erases them.",
    ]
    return "\n".join(lines)



# -- workers on other hosts (NATS_URL) -------------------------------------------------------------

def _name(text: str) -> str:
    """An operator's name for a worker, as code (it may hold any character)."""
    return f"`{clip(text, 64).replace('`', 'ˋ')}`"


def worker_joined(name: str, device: str, model: str) -> str:
    return f"🟢 Worker {_name(name)} joined: {_name(model)} on {_name(device)}; it takes jobs now."


def worker_lost(name: str, reason: str) -> str:
    return (f"🔴 Worker {_name(name)} was lost ({clip(reason, 300)}). A job it held goes back to the front of the "
            "queue, to run on the next free worker (once: a job lost twice fails); nothing is posted twice.")


def worker_left(name: str) -> str:
    return f"⚪ Worker {_name(name)} was stopped by its operator."


def workers_list(workers: list, jobs_done: dict[str, int], now: float, *, remote: bool, lease_seconds: float) -> str:
    """/mod workers: each worker (`bot.workers.RemoteWorker`) with its device, models, state, jobs
    done and when it was last heard from."""
    if not remote:
        return ("Dreambot runs its image engine on its own host (`SD_DEVICES`); no workers on other hosts are set up "
                "(`NATS_URL`). The README's \"Several hosts\" section says how to add some.")
    if not workers:
        return ("No worker is connected: jobs wait in the queue until one asks for work. Start one with "
                "`python -m engine worker` on a host with a GPU (README, \"Several hosts\").")
    lines = [f"**Workers** ({len(workers)}; one is lost after {lease_seconds:g} s of silence)"]
    for worker in sorted(workers, key=lambda w: w.name.lower()):
        status = worker.status
        models = ", ".join(status.models) or "none"
        state = "busy" if worker.busy else "idle"  # not with which job: it may be another server's
        seen = max(now - worker.last_seen, 0.0)
        lines.append(f"• {_name(worker.name)} · {_name(status.device)} · models: {clip(models, 200)} · {state} · "
                     f"{jobs_done.get(worker.name, 0)} job(s) done · last seen {duration(seen)} ago")
    return clip("\n".join(lines), 2000)
