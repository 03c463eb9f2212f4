"""Speech through the official `openai` client against `trillim serve --voice`:
`client.audio.transcriptions.create` with Whisper tiny.en (scripts/fetch-voice-models.sh),
checked against CTranslate2's transcripts in tests/fixtures/voice/goldens.json, and
`client.audio.speech.with_streaming_response.create` on the synthetic pocket-tts fixture
(testdata/models/tts-tiny), plus custom voices registered (from a voice state or cloned from a
recording), listed, used across a restart and deleted."""

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
TTS = ROOT / "testdata" / "models" / "tts-tiny"
GOLDENS = json.loads((FIXTURES / "goldens.json").read_text())["clips"]


def whisper_dir():
    p = os.environ.get("TRILLIM_WHISPER_DIR")
    if p:
        return Path(p)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "trillim" / "whisper-tiny.en-ct2"


def voice_args(model, home):
    return ["--voice", "--whisper-model", str(model), "--voice-threads", "2",
            "--tts-model", str(TTS), "--voices-dir", str(home / "voices")]


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
    s = Server(home, "test-org/tiny", voice_args(model, home))
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


def speak(server, **kw):
    c = server.client()
    with c.audio.speech.with_streaming_response.create(model="tts-1", **kw) as r:
        assert r.status_code == 200
        ctype = r.headers["content-type"]
        return ctype, b"".join(r.iter_bytes())


def test_speech_streams_a_wav(voice):
    ctype, b = speak(voice, voice="alba", input="Hello world.")
    assert ctype == "audio/wav"
    assert b[:4] == b"RIFF" and b[8:16] == b"WAVEfmt " and b[36:40] == b"data"
    assert b[4:8] == b"\xff" * 4 and b[40:44] == b"\xff" * 4
    assert int.from_bytes(b[24:28], "little") == 24000
    n = (len(b) - 44) // 2
    assert n == 38 * 1920  # the reference's frame count for this text on these weights
    ctype, p = speak(voice, voice="alba", input="Hello world.", response_format="pcm")
    assert ctype == "audio/pcm" and p == b[44:]
    _, fast = speak(voice, voice="alba", input="Hello world.", response_format="pcm", speed=2.0)
    assert len(fast) // 2 == round(n / 2)  # time-stretched, not cut


def test_speech_bad_requests(voice):
    c = voice.client()
    for kw in [dict(voice="nobody", input="Hi"), dict(voice="alba", input="   "),
               dict(voice="alba", input="Hi", response_format="mp3"),
               dict(voice="alba", input="Hi", speed=9.0)]:
        with pytest.raises(openai.BadRequestError):
            with c.audio.speech.with_streaming_response.create(model="tts-1", **kw) as r:
                r.read()


def multipart(fields, file_bytes):
    boundary = "----trillim-e2e"
    out = b""
    for k, v in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    out += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="v.safetensors"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode() + file_bytes + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def voice_ids(s):
    status, _, body = s.raw("GET", "/v1/voices")
    assert status == 200
    return [(v["voice_id"], v["type"]) for v in json.loads(body)["voices"]]


def test_custom_voices_across_a_restart(voice):
    state = (TTS / "embeddings" / "marius.safetensors").read_bytes()
    assert [v for v, _ in voice_ids(voice)][:8] == [
        "alba", "azelma", "cosette", "eponine", "fantine", "javert", "jean", "marius"]
    body, h = multipart({"voice_id": "../evil"}, state)
    assert voice.raw("POST", "/v1/voices", body, h)[0] == 400
    body, h = multipart({"voice_id": "e2e-voice"}, state)
    status, _, out = voice.raw("POST", "/v1/voices", body, h)
    assert status == 200 and json.loads(out)["status"] == "created"
    assert ("e2e-voice", "custom") in voice_ids(voice)
    _, p = speak(voice, voice="e2e-voice", input="Hello.", response_format="pcm")
    assert len(p) > 0
    again = Server(voice.home, "test-org/tiny", voice_args(whisper_dir(), voice.home))
    try:
        assert ("e2e-voice", "custom") in voice_ids(again)
        assert again.raw("DELETE", "/v1/voices/alba")[0] == 400
        assert again.raw("DELETE", "/v1/voices/e2e-voice")[0] == 200
        assert again.raw("DELETE", "/v1/voices/e2e-voice")[0] == 404
    finally:
        again.stop()


def test_voice_cloned_from_a_recording(voice):
    clip = (ROOT / "testdata" / "audio" / "voice-24k.wav").read_bytes()
    body, h = multipart({"voice_id": "e2e-bad"}, clip[:20])
    status, _, out = voice.raw("POST", "/v1/voices", body, h)
    assert status == 400 and json.loads(out)["error"]["param"] == "file"
    body, h = multipart({"voice_id": "e2e-cloned"}, clip)
    status, _, out = voice.raw("POST", "/v1/voices", body, h)
    assert status == 200 and json.loads(out)["status"] == "created", out
    assert ("e2e-cloned", "custom") in voice_ids(voice)
    _, p = speak(voice, voice="e2e-cloned", input="Hello world.", response_format="pcm")
    assert len(p) > 0
    assert voice.raw("DELETE", "/v1/voices/e2e-cloned")[0] == 200
