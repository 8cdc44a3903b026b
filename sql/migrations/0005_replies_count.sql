-- depends: 0004_feed_indexes
-- An activity's replies_count follows its replies, in the transaction that adds or removes one,
-- whoever writes it: the API (which may only insert activities, not update them), a chore, a
-- restore. The trigger's function runs as its owner (the schema's owner), so the API's role
-- needs no UPDATE privilege on activities for it.
CREATE FUNCTION public.activities_count_replies() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    UPDATE public.activities SET replies_count = replies_count + 1 WHERE uuid = NEW.reply_to_activity_uuid;
  ELSE
    UPDATE public.activities SET replies_count = greatest(replies_count - 1, 0)
    WHERE uuid = OLD.reply_to_activity_uuid;
  END IF;
  RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION public.activities_count_replies() FROM PUBLIC;

CREATE TRIGGER activities_count_replies_on_insert
  AFTER INSERT ON public.activities
  FOR EACH ROW WHEN (NEW.reply_to_activity_uuid IS NOT NULL)
  EXECUTE FUNCTION public.activities_count_replies();
CREATE TRIGGER activities_count_replies_on_delete
  AFTER DELETE ON public.activities
  FOR EACH ROW WHEN (OLD.reply_to_activity_uuid IS NOT NULL)
  EXECUTE FUNCTION public.activities_count_replies();
