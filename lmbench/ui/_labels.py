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
    "Send the tool results; the model continues": "Envía los resultados de las herramientas; el modelo sigue",
    "Send the message (Enter)": "Envía el mensaje (Intro)",
    "Ask for the last reply again": "Pide de nuevo la última respuesta",
    "Stop the reply": "Detén la respuesta",
    "Forget the conversation": "Olvida la conversación",
    "Save the conversation in the store under this name": "Guarda la conversación en el almacén con este nombre",
    "Reopen the saved conversation": "Vuelve a abrir la conversación guardada",
    "Run the prompt with each setting": "Ejecuta el prompt con cada ajuste",
    "Copy the example": "Copia el ejemplo",
    "Reload the history from the store": "Vuelve a leer el historial del almacén",
    "Show {n} older runs": "Muestra {n} ejecuciones anteriores",
    "time (history column)": "hora",
    "run (history column)": "ejec.",
    "model (history column)": "modelo",
    "source (history column)": "origen",
    "max (history column)": "máx",
    "finish (history column)": "fin",
    "sent (history column)": "vía",
    "stop (history column)": "parada",
    "length (history column)": "límite",
    "cancelled (history column)": "cancelada",
    "tool_calls (history column)": "llamadas",
    "tmpl (history column)": "plant",
    "raw (history column)": "crudo",
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
    # The model picker.
    "Model": "Modelo",
    "model": "modelo",
    "search models": "buscar modelos",
    "Other file…": "Otro archivo…",
    "a .gguf path, file name or alias: Load (or Generate) loads it": (
        "una ruta .gguf, un nombre de archivo o un alias: Cargar (o Generar) lo carga"
    ),
    "Load the model now (Generate also loads it)": "Cargar el modelo ahora (Generar también lo carga)",
    "requests decoded together, each with the whole context (the KV cache grows with it)": (
        "peticiones decodificadas a la vez, cada una con el contexto entero (la caché KV crece con ellas)"
    ),
    "KV cache: {slots} x {cells} cells, made at the first generation": (
        "caché KV: {slots} x {cells} celdas, creada en la primera generación"
    ),
    "KV cache: {slots} slot(s) x {cells} cells, {mib:.1f} MiB": (
        "caché KV: {slots} ranura(s) x {cells} celdas, {mib:.1f} MiB"
    ),
    "comparing variants…": "comparando variantes…",
    "loaded": "cargado",
    "default": "predeterminado",
    "chat": "chat",
    "no chat": "sin chat",
    "chat template": "plantilla de chat",
    "no chat template": "sin plantilla de chat",
    "parameters": "parámetros",
    "from": "origen",
    "the {name} {version} package": "el paquete {name} {version}",
    "package": "paquete",
    "folder": "carpeta",
    "path": "ruta",
    "quantized": "cuantizado",
    "adapter": "adaptador",
    "size": "tamaño",
    "quantization": "cuantización",
    "context": "contexto",
    "yes": "sí",
    "no": "no",
    "No models found in the model folders or installed packages.": (
        "No se encontraron modelos en las carpetas de modelos ni en los paquetes instalados."
    ),
    # What each parameter does (the tooltips; the English is the parameter definition's).
    "Maximum number of tokens to generate.": "Número máximo de tokens que generar.",
    "Randomness of sampling: 0 always picks the likeliest token, higher is more varied.": (
        "Aleatoriedad del muestreo: 0 elige siempre el token más probable; más alto, más variado."
    ),
    "Nucleus sampling: keep the smallest set of tokens whose probability adds up to top_p.": (
        "Muestreo de núcleo: conserva el menor conjunto de tokens cuya probabilidad suma top_p."
    ),
    "Keep only the k likeliest tokens (0 keeps all).": (
        "Conserva solo los k tokens más probables (0 los conserva todos)."
    ),
    "Drop tokens less likely than min_p times the likeliest token.": (
        "Descarta los tokens menos probables que min_p veces el token más probable."
    ),
    "Divide the odds of recently seen tokens by this (1 disables).": (
        "Divide las probabilidades de los tokens vistos hace poco por este valor (1 lo desactiva)."
    ),
    "Subtract this from the logit of every token already generated.": (
        "Resta este valor al logit de cada token ya generado."
    ),
    "Subtract this times the count of each token already generated.": (
        "Resta este valor multiplicado por las veces que aparece cada token ya generado."
    ),
    "Random seed; None draws a fresh one (the seed used is always recorded).": (
        "Semilla aleatoria; None elige una nueva (la semilla usada siempre se registra)."
    ),
    "Strings that end the generation when they appear (not included in the text).": (
        "Cadenas que terminan la generación cuando aparecen (no se incluyen en el texto)."
    ),
    "Never end at the end-of-sequence token: always generate max_tokens (for benchmarks).": (
        "No terminar nunca en el token de fin de secuencia: generar siempre max_tokens (para benchmarks)."
    ),
    "Record each token's log-probability and this many top alternatives (None: off).": (
        "Registrar la log-probabilidad de cada token y este número de alternativas principales (None: no)."
    ),
    "Constrain the output to JSON matching this JSON schema (structured output).": (
        "Restringir la salida a JSON que cumpla este esquema JSON (salida estructurada)."
    ),
    "Constrain the output to this GBNF grammar (llama.cpp's grammar format; root rule 'root').": (
        "Restringir la salida a esta gramática GBNF (el formato de llama.cpp; regla raíz 'root')."
    ),
    "at most the loaded context (prompt and reply share it)": (
        "como máximo el contexto cargado (lo comparten el prompt y la respuesta)"
    ),
    # The form.
    "type a string, Enter adds it": "escribe una cadena; Intro la añade",
    "JSON schema, e.g.": "esquema JSON, p. ej.",
    "the JSON schema box does not hold JSON: {error}": "el cuadro del esquema JSON no contiene JSON: {error}",
    "Complete the prompt as it is; off: an instruct model gets it as a user message through its chat template": (
        "Completar el prompt tal cual; desactivado: un modelo instruct lo recibe como mensaje del usuario a "
        "través de su plantilla de chat"
    ),
    "Save the current sampler values under this name": "Guardar los valores actuales del muestreo con este nombre",
    "saved preset {name!r}": "preset {name!r} guardado",
    "precise": "preciso",
    "balanced": "equilibrado",
    "creative": "creativo",
    # The panel's buttons, errors and views.
    "Generate from the prompt (Ctrl+Enter)": "Generar a partir del prompt (Ctrl+Intro)",
    "Stop the generation": "Detener la generación",
    "Continue the generation from the chosen alternative": "Continuar la generación desde la alternativa elegida",
    "Generate the last run again alone, in batches, with and without the cache": (
        "Generar de nuevo la última ejecución sola, en lotes, con y sin caché"
    ),
    "type a prompt first: the prompt box is empty": "escribe primero un prompt: el cuadro del prompt está vacío",
    "generate first, then pick a token and one of its alternatives": (
        "genera primero; luego elige un token y una de sus alternativas"
    ),
    "generate first: the audit repeats the last run's request": (
        "genera primero: la auditoría repite la petición de la última ejecución"
    ),
    "Check this setting:": "Revisa este ajuste:",
    "This model cannot be used:": "No se puede usar este modelo:",
    "Could not finish:": "No se pudo terminar:",
    "Something went wrong (details in the Log tab):": "Algo salió mal (detalles en la pestaña Registro):",
    "(nothing yet)": "(nada todavía)",
    "(no model loaded)": "(ningún modelo cargado)",
    "No token probabilities: tick “record token probabilities” and generate.": (
        "Sin probabilidades de tokens: marca “registrar probabilidades de tokens” y genera."
    ),
    "colour: probability of the chosen token (red unlikely, green near-certain)": (
        "color: probabilidad del token elegido (rojo improbable, verde casi seguro)"
    ),
    "entropy": "entropía",
    "probability": "probabilidad",
    "The lmbench panel runs in the notebook's kernel: after a restart, run this cell again to get it back.": (
        "El panel de lmbench se ejecuta en el kernel del cuaderno: tras un reinicio, ejecuta de nuevo esta celda "
        "para recuperarlo."
    ),
    # How a run ended (its finish_reason).
    "stop": "parada",
    "length": "longitud máxima",
    "cancelled": "cancelada",
    # The Server tab.
    "0 picks a free port": "0 elige un puerto libre",
    "Serve the API on 127.0.0.1": "Servir la API en 127.0.0.1",
    "The local API (LM Studio-style and OpenAI-compatible) is not running: choose a port (0: any free one) and "
    "start it.": "La API local (al estilo de LM Studio y compatible con OpenAI) no está en marcha: elige un puerto "
    "(0: cualquiera libre) e iníciala.",
    "Serving on": "Sirviendo en",
    "this machine only; requests are recorded in the panel’s store": (
        "solo esta máquina; las peticiones se registran en el almacén del panel"
    ),
    # The Log tab's own lines.
    "error": "error",
    "loaded {name} (n_ctx={n_ctx}, threads {threads})": "cargado {name} (n_ctx={n_ctx}, hilos {threads})",
    "API server stopped": "servidor de la API detenido",
    "API server on {url} (model {model})": "servidor de la API en {url} (modelo {model})",
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
