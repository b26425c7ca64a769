"""Drives mcplane's gateway with the official `openai` package, unchanged.

Usage: openai_client.py BASE_URL API_KEY  ->  prints one JSON object with what it saw.
"""
import json
import sys

import openai

base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=30)
question = [{"role": "user", "content": "Customer jane.doe@example.com (+44 20 7946 0958) says checkout fails. Why?"}]

plain = client.chat.completions.create(model="auto", messages=question)
streamed = client.chat.completions.create(model="auto", messages=question, stream=True)
pieces = [c.choices[0].delta.content or "" for c in streamed if c.choices]
models = client.models.list()

try:
    openai.OpenAI(base_url=base + "/v1", api_key="mcp_wrong", max_retries=0).chat.completions.create(
        model="auto", messages=question
    )
    denied = None
except openai.AuthenticationError as e:
    denied = e.status_code

print(json.dumps({
    "version": openai.__version__,
    "plain": plain.choices[0].message.content,
    "plain_model": plain.model,
    "usage": plain.usage.total_tokens,
    "streamed": "".join(pieces),
    "chunks": len(pieces),
    "models": [m.id for m in models.data],
    "denied": denied,
}))
