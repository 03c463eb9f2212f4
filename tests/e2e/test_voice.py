"""Speech-to-text through the official `openai` client: `client.audio.transcriptions.create`
against `trillim serve --voice` with Whisper tiny.en (scripts/fetch-voice-models.sh), checked
against CTranslate2's transcripts in tests/fixtures/voice/goldens.json."""

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import openai
import pytest

from test_openai_client import BIN, TINY, Server, place

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "voice"
GOLDENS = json.loads((FIXTURES / "goldens.json").read_text())["clips"]


def whisper_dir():
    p = os.environ.get("TRILLIM_WHISPER_DIR")
    if p:
        return Path(p)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "trillim" / "whisper-tiny.en-ct2"


def words(s):
    return re.sub(r"[^a-z0-9 ]", "", s.lower()).split()


@pytest.fixture(scope="module")
def voice():
    if not BIN.exists():
        pytest.fail(f"{BIN} not found: build it with `cargo build --release -p trillim`")
    model = whisper_dir()
    if not (model / "model.bin").exists():
        pytest.fail(f"{model} has no model.bin: run scripts/fetch-voice-models.sh")
    home = Path(tempfile.mkdtemp(prefix="trillim-e2e-voice-"))
    place(TINY, home / "models" / "test-org" / "tiny")
    s = Server(home, "test-org/tiny", ["--voice", "--whisper-model", str(model), "--voice-threads", "2"])
    yield s
    s.stop()
    shutil.rmtree(home, ignore_errors=True)


def test_transcription_json(voice):
    with open(FIXTURES / "library.wav", "rb") as f:
        r = voice.client().audio.transcriptions.create(model="whisper-1", file=f)
    assert words(r.text) == words(GOLDENS["library"]["timestamps"]["text"])


def test_transcription_text_and_verbose(voice):
    c = voice.client()
    with open(FIXTURES / "hello.flac", "rb") as f:
        text = c.audio.transcriptions.create(model="whisper-1", file=f, response_format="text")
    assert "recognition" in text.lower()
    with open(FIXTURES / "window.wav", "rb") as f:
        v = c.audio.transcriptions.create(
            model="whisper-1", file=f, response_format="verbose_json", language="en"
        )
    assert words(v.text) == words(GOLDENS["window"]["timestamps"]["text"])
    assert v.language == "english" and v.duration > 3
    assert v.segments and v.segments[0].start <= v.segments[0].end


def test_transcription_subtitles(voice):
    with open(FIXTURES / "coffee.wav", "rb") as f:
        srt = voice.client().audio.transcriptions.create(
            model="whisper-1", file=f, response_format="srt"
        )
    assert srt.startswith("1\n00:00:0") and " --> " in srt


def test_bad_audio_is_400(voice):
    with pytest.raises(openai.BadRequestError) as e:
        voice.client().audio.transcriptions.create(
            model="whisper-1", file=("notes.wav", b"RIFF\x00\x00\x00\x00WAVEjunk")
        )
    assert "audio" in str(e.value).lower()
    assert voice.raw("GET", "/health")[0] == 200


def test_speech_is_not_in_this_build(voice):
    status, _, body = voice.raw("POST", "/v1/audio/speech", json.dumps({"input": "hi", "voice": "alba"}))
    assert status == 501 and b"text-to-speech" in body
