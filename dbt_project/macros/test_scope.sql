{#-
    Data tests configured with `where: "__new_rows__"` (every test: dbt_project.yml) check the
    rows of their model with an `ingested_at` after FRAUD_PLATFORM_TESTS_INGESTED_AFTER (an
    instant) when that variable is set, and the whole model otherwise. The transform asset sets
    it on the runs that kafka_arrivals_sensor requests (to the newest `ingested_at` silver held
    before the run), so a micro-batch tests what it added instead of the whole history;
    scheduled, UI and CI runs (tests/dbt) test everything, as do models without `ingested_at`.
    A `unique` test checks every row whose key a new row has: a new copy of an old key is a
    duplicate too. Overrides dbt's `get_where_subquery` (what generic tests select from); other
    `where` configs keep dbt's behaviour. Read at execution only: an environment variable read
    while parsing would be recorded for partial parsing.
-#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- if where == '__new_rows__' -%}
        {%- set after = env_var('FRAUD_PLATFORM_TESTS_INGESTED_AFTER', '') if execute else '' -%}
        {%- set columns = adapter.get_columns_in_relation(relation) if after else [] -%}
        {%- if 'ingested_at' in columns | map(attribute='name') | map('lower') | list -%}
            {%- set new_rows = "ingested_at > cast('" ~ after ~ "' as timestamptz)" -%}
            {%- set test = model.get('test_metadata') or {} -%}
            {%- if test.get('name') == 'unique' -%}
                {%- set key = test.get('kwargs', {}).get('column_name') -%}
                {%- do return(
                    '(select * from ' ~ relation ~ ' where (' ~ key ~ ') in (select ' ~ key
                    ~ ' from ' ~ relation ~ ' where ' ~ new_rows ~ ')) dbt_subquery'
                ) -%}
            {%- endif -%}
            {%- do return('(select * from ' ~ relation ~ ' where ' ~ new_rows ~ ') dbt_subquery') -%}
        {%- endif -%}
        {%- do return(relation) -%}
    {%- endif -%}
    {%- do return(adapter.dispatch('get_where_subquery', 'dbt')(relation)) -%}
{%- endmacro %}
