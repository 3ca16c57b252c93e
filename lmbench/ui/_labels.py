"""The panel's words in English and Spanish (the languages of LM Studio's guides).

The language is ``lmbench.panel(lang=...)``, else ``$LMBENCH_LANG``, else JupyterLab's own
language setting, else English. Texts are written in English in the code; ``SPANISH`` maps them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import ParameterError

LANGUAGES = ("en", "es")

SPANISH = {
    # Generation parameters, as the guides name them.
    "Max Tokens": "Tokens máximos",
    "Temperature": "Temperatura",
    "Top P": "Top P",
    "Top K": "Top K",
    "Min P": "Min P",
    "Repeat Penalty": "Penalización por repetición",
    "Presence Penalty": "Penalización por presencia",
    "Frequency Penalty": "Penalización por frecuencia",
    "Seed": "Semilla",
    "Stop Strings": "Cadenas de parada",
    "Ignore EOS": "Ignorar EOS",
    "Logprobs": "Logprobs",
    "JSON Schema": "Esquema JSON",
    "Grammar": "Gramática",
    # The panel.
    "Generate": "Generar",
    "Stop": "Detener",
    "Load": "Cargar",
    "Compare": "Comparar",
    "Compare variants": "Comparar variantes",
    "Drift of this model's quantized copies on the prompt": (
        "Deriva de las copias cuantizadas de este modelo con el prompt"
    ),
    "No quantized copies of this model yet: make some with lmbench.quantize": (
        "Aún no hay copias cuantizadas de este modelo: créalas con lmbench.quantize"
    ),
    "Send": "Enviar",
    "New chat": "Nuevo chat",
    "Regenerate": "Regenerar",
    "Refresh": "Actualizar",
    "Older runs": "Ejecuciones anteriores",
    "Save preset": "Guardar preset",
    "Output": "Salida",
    "History": "Historial",
    "Log": "Registro",
    "Debug": "Depuración",
    "Chat": "Chat",
    "Prompt": "Prompt",
    "Message": "Mensaje",
    "Load settings": "Ajustes de carga",
    "context length": "contexto",
    "threads": "hilos",
    "0: as many as the machine leaves free, re-checked while decoding": (
        "0: tantos como la máquina deje libres, revisado durante la decodificación"
    ),
    "parallel": "en paralelo",
    "random seed": "semilla aleatoria",
    "record token probabilities": "registrar probabilidades de tokens",
    "raw completion": "completado en bruto",
    "experiment": "experimento",
    "experiment (optional)": "experimento (opcional)",
    "preset": "preset",
    "name": "nombre",
    "token": "token",
    "parameter": "parámetro",
    "values": "valores",
    "all runs in the store (not only this panel's)": "todas las ejecuciones (no solo las de este panel)",
    "show llama.cpp debug lines": "mostrar líneas de depuración de llama.cpp",
    "system message (optional)": "mensaje de sistema (opcional)",
    "system prompt (optional)": "prompt de sistema (opcional)",
    "{n} tokens of {n_ctx}": "{n} tokens de {n_ctx}",
    "raw text": "texto en bruto",
    "at most {n_ctx} (the context)": "como máximo {n_ctx} (el contexto)",
    "Max Tokens {value} is more than the context of {n_ctx} tokens, which the prompt and the reply share: give at "
    "most {n_ctx}, or load the model with a larger context": "Tokens máximos {value} supera el contexto de {n_ctx} "
    "tokens, que comparten el prompt y la respuesta: indica como máximo {n_ctx} o carga el modelo con un contexto "
    "mayor",
    "Copy": "Copiar",
    "prompt tokens": "tokens del prompt",
    "completion tokens": "tokens generados",
    "finish": "fin",
    "thread": "hilo",
    "seed": "semilla",
    "run": "ejecución",
    "Copy the reply": "Copiar la respuesta",
    "characters": "caracteres",
    "tokens": "tokens",
    "chat template (gguf)": "plantilla de chat (gguf)",
    "chat template (plain)": "plantilla de chat (plain)",
    "Structured output (JSON schema)": "Salida estructurada (esquema JSON)",
    "model: path, file name or alias (empty: $LMBENCH_MODEL or the default)": (
        "modelo: ruta, nombre de archivo o alias (vacío: $LMBENCH_MODEL o el predeterminado)"
    ),
    "loading…": "cargando…",
    "generating…": "generando…",
    "replying…": "respondiendo…",
    "Server": "Servidor",
    "port": "puerto",
    "API key (optional)": "clave de API (opcional)",
    "Start server": "Iniciar servidor",
    "Stop server": "Detener servidor",
    "alternative": "alternativa",
    "Fork": "Bifurcar",
    "Reproducible?": "¿Reproducible?",
    "checking…": "comprobando…",
    "condition": "condición",
    "identical": "idéntica",
    "first divergent token": "primer token divergente",
    "near tie": "casi empate",
    "all identical": "todas idénticas",
    # The arena and the rating grid.
    "A is better": "A es mejor",
    "B is better": "B es mejor",
    "Tie": "Empate",
    "Both bad": "Ambas malas",
    "Skip": "Saltar",
    "note (optional)": "nota (opcional)",
    "Done": "Terminado",
    "of": "de",
    "pairs": "pares",
    "keys": "teclas",
    "rank": "puesto",
    "score": "puntuación",
    "95% interval": "intervalo del 95 %",
    "win rate": "tasa de victorias",
    "votes": "votos",
    "Previous": "Anterior",
    "Next": "Siguiente",
    "runs": "ejecuciones",
    "good": "buena",
    "bad": "mala",
    # The Chat tab: messages, saved conversations, tool calls.
    "No messages yet.": "Aún no hay mensajes.",
    "Copy the message": "Copiar el mensaje",
    "Edit and send again": "Editar y volver a enviar",
    "Delete the message": "Borrar el mensaje",
    "Editing a message: Send replaces it and what followed it": (
        "Editando un mensaje: Enviar lo reemplaza junto con lo que le siguió"
    ),
    "conversation name": "nombre de la conversación",
    "Save": "Guardar",
    "saved": "guardadas",
    "Open": "Abrir",
    "{n} turns": "{n} turnos",
    "Tools": "Herramientas",
    "tool choice": "uso de herramientas",
    "parallel calls": "llamadas en paralelo",
    "Send results": "Enviar resultados",
    "result (JSON)": "resultado (JSON)",
    # The Compare tab: what is compared, and the metrics under each column by their names in words.
    "compare": "comparar",
    "presets": "presets",
    "models": "modelos",
    "comparing…": "comparando…",
    "2 to 4 values, comma-separated": "de 2 a 4 valores, separados por comas",
    "2 to 4 preset names, comma-separated": "de 2 a 4 nombres de preset, separados por comas",
    "2 to 4 models (paths or names), comma-separated": "de 2 a 4 modelos (rutas o nombres), separados por comas",
    "distinct word pairs": "pares de palabras distintos",
    "mean log-probability": "log-probabilidad media",
}


def language(lang: str | None = None) -> str:
    """``lang`` if given (``en`` or ``es``), else ``$LMBENCH_LANG``, else JupyterLab's language, else ``en``."""
    if lang is not None:
        code = _code(lang)
        if code not in LANGUAGES:
            raise ParameterError(f"lang must be one of {', '.join(LANGUAGES)}, not {lang!r}", name="lang", value=lang)
        return code
    for found in (os.environ.get("LMBENCH_LANG"), _jupyterlab_locale()):
        if found and _code(found) in LANGUAGES:
            return _code(found)
    return "en"


def translator(lang: str) -> Callable[[str], str]:
    """A function from the English text to the text in ``lang``."""
    if lang == "es":
        return lambda text: SPANISH.get(text, text)
    return lambda text: text


def _code(value: str) -> str:
    return value.strip().lower().replace("-", "_").split("_")[0]


def _jupyterlab_locale() -> str | None:
    """The language chosen in JupyterLab's Settings > Language, if any."""
    settings = Path(os.environ.get("JUPYTERLAB_SETTINGS_DIR") or Path.home() / ".jupyter" / "lab" / "user-settings")
    path = settings / "@jupyterlab" / "translation-extension" / "plugin.jupyterlab-settings"
    try:
        text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("//"))
        locale = json.loads(text).get("locale")
    except (OSError, ValueError, AttributeError):
        return None
    return locale if isinstance(locale, str) else None
