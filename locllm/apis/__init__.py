"""What sits on the Localizer and the evaluation's predictions log: prediction on images given one by one
(``image_prediction``: ``locllm predict IMG...`` and the web demo), prediction over a whole data set
(``dataset_prediction``, streamed, resumable, sharded over processes), its inputs (``image_sources``,
``person_boxes``: typed boxes and detection files, for every command) and its COCO keypoint results
(``coco_results``); videos with ids across frames (``video``); what predict and serve report (``report``);
a detector's boxes for evaluation, cached (``detector_boxes``); the shipped demo checkpoint and its pictures
(``demo``); the decoding benchmark (``benchmark``)."""
