"""The streaming application: settings, topics, the faust app and the local broker."""
