"""Pure COCO / VOC readers and writers (no database, no queue)."""
