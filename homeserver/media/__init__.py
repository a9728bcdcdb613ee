"""The media repository: storage of uploaded files, thumbnails and URL previews."""
