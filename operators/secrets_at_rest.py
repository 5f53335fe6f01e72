"""Webhook secrets at rest: encrypted with Fernet (AES-128-CBC and HMAC-SHA256, from ``cryptography``).

Encrypted, not hashed: the sender signs every delivery with the secret itself (HMAC over the body), so it must
read the secret back; a keyed hash serves only where a secret is verified, never where it is used.

The key is ``delivery.secrets_key`` (a Fernet key: 32 url-safe base64-encoded bytes, e.g. from a secrets manager
through ``DIFFSENTRY_DELIVERY__SECRETS_KEY``), or else the key file ``webhook-secrets.key`` beside the database,
created 0600 with a new random key the first time. A copy of the database without the key reveals no secret;
losing the key loses the secrets (the subscriptions then need new ones).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from core.private_files import make_private, write_private_text

KEY_FILE = "webhook-secrets.key"


class WrongSecretsKey(RuntimeError):
    """Stored secrets do not decrypt with this key (another key file, or another delivery.secrets_key)."""


class SecretCipher:
    def __init__(self, key: str | bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError as error:
            raise ValueError(
                f"the secrets key (delivery.secrets_key, or {KEY_FILE}) is not a Fernet key: {error}"
            ) from None

    @classmethod
    def load(cls, key: str | None, key_file: Path) -> SecretCipher:
        """The cipher of ``key`` if given, else of ``key_file``, created with a new key when it does not exist."""
        if key:
            return cls(key)
        key_file.parent.mkdir(parents=True, exist_ok=True)
        if not key_file.exists():
            draft = key_file.with_name(f".{key_file.name}.{os.getpid()}")
            write_private_text(draft, Fernet.generate_key().decode() + "\n")
            try:
                os.link(draft, key_file)  # atomic, and never replaces a key another store wrote first
            except FileExistsError:
                pass
            finally:
                draft.unlink()
        make_private(key_file)
        return cls(key_file.read_bytes().strip())

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except InvalidToken:
            raise WrongSecretsKey(
                f"a stored webhook secret does not decrypt: delivery.secrets_key or {KEY_FILE} is not the key it "
                "was encrypted with"
            ) from None
