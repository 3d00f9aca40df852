"""What an import reads besides its images, as ONE object: the CLI, the Import tab, the job and
``services.importing.import_dataset`` pass :class:`ImportOptions` along unchanged."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

PATH_FIELDS = ("classes_file", "tags_csv", "masks_dir", "coco_json", "label_studio_json", "label_config")


@dataclass(frozen=True)
class ImportOptions:
    """The labels and limits of an import (paths as strings; see ``import_dataset``)."""

    classes_file: str | None = None
    has_background: bool = True
    tags_csv: str | None = None
    masks_dir: str | None = None
    coco_json: str | None = None
    label_studio_json: str | None = None
    label_config: str | None = None
    max_pixels: int | None = None
    within: tuple[str, ...] = ()  # folders every file read must resolve under (the UI's import roots)

    def __post_init__(self) -> None:  # paths given as Path objects are kept as strings (JSON)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in PATH_FIELDS and isinstance(value, Path):
                object.__setattr__(self, f.name, str(value))
        object.__setattr__(self, "within", tuple(str(root) for root in self.within))

    def absolute(self) -> ImportOptions:
        """The same options with every path absolute (for a job that runs elsewhere)."""
        paths = {name: str(Path(value).expanduser().absolute())
                 for name in PATH_FIELDS if (value := getattr(self, name))}
        return replace(self, **paths, within=tuple(str(Path(root)) for root in self.within))
