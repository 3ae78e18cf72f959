"""The image renderers ``images.backend`` picks from ``config.RENDERERS``, one class per module; each is a
``synthvlp.generation.images.Renderer``. Adding one is a module here plus its line in ``config.RENDERERS``
(docs/extending.md)."""
