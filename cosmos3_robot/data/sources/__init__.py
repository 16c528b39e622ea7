"""Readers that turn on-disk formats into :class:`cosmos3_robot.data.episode.Episode` objects."""
